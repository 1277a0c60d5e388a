#include "fft.hpp"

#include <cmath>
#include <initializer_list>
#include <stdexcept>

namespace qasr {
namespace {

constexpr double kTwoPi = 6.283185307179586476925286766559;

// Complex product without std::complex's NaN/infinity recovery (a libgcc call
// that also blocks vectorisation); our operands are always finite.
inline cplx mul(cplx a, cplx b) {
  return {a.real() * b.real() - a.imag() * b.imag(), a.real() * b.imag() + a.imag() * b.real()};
}

cplx unit_root(std::size_t k, std::size_t n) {  // exp(-2 pi i k / n)
  const double angle = -kTwoPi * static_cast<double>(k) / static_cast<double>(n);
  return {std::cos(angle), std::sin(angle)};
}

// Radix 4 first (fewest operations), then 2, then 5.
std::vector<std::size_t> factorize(std::size_t n) {
  std::vector<std::size_t> radices;
  for (const std::size_t radix : {std::size_t{4}, std::size_t{2}, std::size_t{5}}) {
    while (n % radix == 0) {
      radices.push_back(radix);
      n /= radix;
    }
  }
  if (n != 1) throw std::invalid_argument("FFT length must be a product of 2s and 5s");
  return radices;
}

}  // namespace

ComplexFft::ComplexFft(std::size_t n) : n_(n) {
  if (n == 0) throw std::invalid_argument("FFT length must be positive");
  radices_ = n > 1 ? factorize(n) : std::vector<std::size_t>{1};
  std::size_t remaining = n;
  for (std::size_t radix : radices_) {
    remaining /= radix;
    lengths_.push_back(remaining);
  }
  twiddles_.resize(n);
  for (std::size_t k = 0; k < n; ++k) twiddles_[k] = unit_root(k, n);
}

void ComplexFft::forward(const cplx* in, cplx* out) const { work(out, in, 1, 0); }

// Decimation in time (the recursion of KISS FFT): split the input into `radix`
// interleaved sub-sequences, transform each recursively into consecutive blocks
// of `out`, then combine the blocks with one butterfly pass.
void ComplexFft::work(cplx* out, const cplx* in, std::size_t in_stride, std::size_t level) const {
  const std::size_t radix = radices_[level];
  const std::size_t m = lengths_[level];
  if (m == 1) {
    for (std::size_t q = 0; q < radix; ++q) out[q] = in[q * in_stride];
  } else {
    for (std::size_t q = 0; q < radix; ++q) work(out + q * m, in + q * in_stride, in_stride * radix, level + 1);
  }
  const std::size_t tw_stride = in_stride;  // n / (radix * m)
  switch (radix) {
    case 1: break;
    case 2: butterfly2(out, tw_stride, m); break;
    case 4: butterfly4(out, tw_stride, m); break;
    default: butterfly5(out, tw_stride, m); break;
  }
}

void ComplexFft::butterfly2(cplx* out, std::size_t tw_stride, std::size_t m) const {
  for (std::size_t k = 0; k < m; ++k) {
    const cplx t = mul(out[k + m], twiddles_[k * tw_stride]);
    out[k + m] = out[k] - t;
    out[k] += t;
  }
}

void ComplexFft::butterfly4(cplx* out, std::size_t tw_stride, std::size_t m) const {
  for (std::size_t k = 0; k < m; ++k) {
    const cplx a0 = out[k];
    const cplx a1 = mul(out[k + m], twiddles_[k * tw_stride]);
    const cplx a2 = mul(out[k + 2 * m], twiddles_[2 * k * tw_stride]);
    const cplx a3 = mul(out[k + 3 * m], twiddles_[3 * k * tw_stride]);
    const cplx s02 = a0 + a2, d02 = a0 - a2;
    const cplx s13 = a1 + a3, d13 = a1 - a3;
    const cplx minus_i_d13{d13.imag(), -d13.real()};  // -i * (a1 - a3)
    out[k] = s02 + s13;
    out[k + m] = d02 + minus_i_d13;
    out[k + 2 * m] = s02 - s13;
    out[k + 3 * m] = d02 - minus_i_d13;
  }
}

// With w = exp(-2 pi i / 5) = c1 - i s1 and w^2 = c2 - i s2, the 5-point DFT of
// a0 .. a4 pairs the inputs symmetric about 0:  s14 = a1 + a4, d14 = a1 - a4, ...
//   X0    = a0 + s14 + s23
//   X1,X4 = a0 + c1 s14 + c2 s23 -/+ i (s1 d14 + s2 d23)
//   X2,X3 = a0 + c2 s14 + c1 s23 -/+ i (s2 d14 - s1 d23)
void ComplexFft::butterfly5(cplx* out, std::size_t tw_stride, std::size_t m) const {
  const double c1 = twiddles_[tw_stride * m].real(), s1 = -twiddles_[tw_stride * m].imag();
  const double c2 = twiddles_[2 * tw_stride * m].real(), s2 = -twiddles_[2 * tw_stride * m].imag();
  auto times_minus_i = [](cplx z) { return cplx{z.imag(), -z.real()}; };
  for (std::size_t k = 0; k < m; ++k) {
    const cplx a0 = out[k];
    const cplx a1 = mul(out[k + m], twiddles_[k * tw_stride]);
    const cplx a2 = mul(out[k + 2 * m], twiddles_[2 * k * tw_stride]);
    const cplx a3 = mul(out[k + 3 * m], twiddles_[3 * k * tw_stride]);
    const cplx a4 = mul(out[k + 4 * m], twiddles_[4 * k * tw_stride]);
    const cplx s14 = a1 + a4, d14 = a1 - a4, s23 = a2 + a3, d23 = a2 - a3;
    const cplx real_1 = a0 + c1 * s14 + c2 * s23;
    const cplx imag_1 = times_minus_i(s1 * d14 + s2 * d23);
    const cplx real_2 = a0 + c2 * s14 + c1 * s23;
    const cplx imag_2 = times_minus_i(s2 * d14 - s1 * d23);
    out[k] = a0 + s14 + s23;
    out[k + m] = real_1 + imag_1;
    out[k + 4 * m] = real_1 - imag_1;
    out[k + 2 * m] = real_2 + imag_2;
    out[k + 3 * m] = real_2 - imag_2;
  }
}

RealFft::RealFft(std::size_t n) : n_(n), half_(n >= 2 ? n / 2 : 1) {
  if (n < 2 || n % 2 != 0) throw std::invalid_argument("real FFT length must be even and >= 2");
  split_twiddles_.resize(n / 2 + 1);
  for (std::size_t k = 0; k <= n / 2; ++k) split_twiddles_[k] = unit_root(k, n);
}

// Pack even/odd samples as one complex sequence z = x_even + i x_odd, transform
// it at half length, then separate the two spectra:
//   E[k] = (Z[k] + conj Z[h-k]) / 2,  O[k] = (Z[k] - conj Z[h-k]) / 2i,
//   X[k] = E[k] + exp(-2 pi i k / n) O[k].
void RealFft::forward(const double* x, cplx* spectrum, cplx* scratch) const {
  const std::size_t h = n_ / 2;
  cplx* packed = scratch;
  cplx* z = scratch + h;
  for (std::size_t j = 0; j < h; ++j) packed[j] = {x[2 * j], x[2 * j + 1]};
  half_.forward(packed, z);
  for (std::size_t k = 0; k <= h; ++k) {
    const cplx zk = z[k == h ? 0 : k];
    const cplx zc = std::conj(z[k == 0 ? 0 : h - k]);
    const cplx even = 0.5 * (zk + zc);
    const cplx diff = zk - zc;
    const cplx odd{0.5 * diff.imag(), -0.5 * diff.real()};  // diff / 2i
    spectrum[k] = even + mul(split_twiddles_[k], odd);
  }
}

}  // namespace qasr
