// Mixed-radix FFTs in double precision: a complex FFT for lengths 2^a 5^b
// (radix 4, 2 and 5 butterflies: the mel front end's 400-point real FFT runs
// a 200 = 4 * 2 * 5 * 5 point complex one)
// and a real-input FFT of even length built on a half-length complex FFT.
//
// Objects are immutable after construction; callers pass their own scratch,
// so one object can be shared by several threads.
#pragma once

#include <complex>
#include <cstddef>
#include <vector>

namespace qasr {

using cplx = std::complex<double>;

class ComplexFft {
 public:
  // `n` must be a product of 2s and 5s.
  explicit ComplexFft(std::size_t n);

  std::size_t size() const { return n_; }

  // Forward DFT, X[k] = sum_j x[j] exp(-2 pi i j k / n); `in` and `out` must not alias.
  void forward(const cplx* in, cplx* out) const;

 private:
  void work(cplx* out, const cplx* in, std::size_t in_stride, std::size_t level) const;
  void butterfly2(cplx* out, std::size_t tw_stride, std::size_t m) const;
  void butterfly4(cplx* out, std::size_t tw_stride, std::size_t m) const;
  void butterfly5(cplx* out, std::size_t tw_stride, std::size_t m) const;

  std::size_t n_;
  std::vector<std::size_t> radices_;  // radices_[i] * lengths_[i] = length at level i
  std::vector<std::size_t> lengths_;  // sub-transform length below level i
  std::vector<cplx> twiddles_;        // twiddles_[k] = exp(-2 pi i k / n)
};

class RealFft {
 public:
  // `n` must be even, and n / 2 a product of 2s and 5s.
  explicit RealFft(std::size_t n);

  std::size_t size() const { return n_; }
  std::size_t num_bins() const { return n_ / 2 + 1; }
  std::size_t scratch_size() const { return n_; }  // complex values

  // One-sided spectrum X[0 .. n/2] of the real signal x[0 .. n-1].
  // `scratch` must hold scratch_size() values.
  void forward(const double* x, cplx* spectrum, cplx* scratch) const;

 private:
  std::size_t n_;
  ComplexFft half_;
  std::vector<cplx> split_twiddles_;  // exp(-2 pi i k / n), k = 0 .. n/2
};

}  // namespace qasr
