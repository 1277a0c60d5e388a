#include "resample.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

namespace qasr {
namespace {

constexpr double kPi = 3.141592653589793238462643383279;

// Modified Bessel function of the first kind, order 0 (power series).
double bessel_i0(double x) {
  const double q = 0.25 * x * x;
  double term = 1.0, sum = 1.0;
  for (int k = 1; k < 500 && term > 1e-17 * sum; ++k) {
    term *= q / (static_cast<double>(k) * static_cast<double>(k));
    sum += term;
  }
  return sum;
}

// Kaiser's empirical formulas for a given stopband attenuation (dB).
double kaiser_beta(double attenuation_db) {
  if (attenuation_db > 50.0) return 0.1102 * (attenuation_db - 8.7);
  if (attenuation_db > 21.0) return 0.5842 * std::pow(attenuation_db - 21.0, 0.4) + 0.07886 * (attenuation_db - 21.0);
  return 0.0;
}

double kaiser_length(double attenuation_db, double transition_cycles_per_sample) {
  return (attenuation_db - 7.95) / (2.285 * 2.0 * kPi * transition_cycles_per_sample);
}

float dot(const float* a, const float* b, std::size_t n) {
  constexpr std::size_t kLanes = 8;  // independent partial sums, vectorisable
  float acc[kLanes] = {};
  std::size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (std::size_t l = 0; l < kLanes; ++l) acc[l] += a[i + l] * b[i + l];
  }
  float total = 0.0f;
  for (; i < n; ++i) total += a[i] * b[i];
  for (std::size_t l = 0; l < kLanes; ++l) total += acc[l];
  return total;
}

}  // namespace

Resampler::Resampler(std::int64_t src_rate, std::int64_t dst_rate) {
  if (src_rate < 1 || dst_rate < 1) throw std::invalid_argument("sample rates must be positive");
  const std::int64_t g = std::gcd(src_rate, dst_rate);
  up_ = static_cast<std::uint64_t>(dst_rate / g);
  down_ = static_cast<std::uint64_t>(src_rate / g);

  // Work in input samples: the lower Nyquist as a fraction of the input rate.
  const double lower_nyquist = 0.5 * std::min(1.0, static_cast<double>(up_) / static_cast<double>(down_));
  cutoff_ = (kPassbandEnd + kStopbandStart) * lower_nyquist;  // 2 * midpoint of the transition
  beta_ = kaiser_beta(kStopbandAttenuationDb);
  i0_beta_ = bessel_i0(beta_);
  const double transition = (kStopbandStart - kPassbandEnd) * lower_nyquist;
  half_width_ = static_cast<std::size_t>(std::ceil(0.5 * kaiser_length(kStopbandAttenuationDb, transition))) + 1;

  interpolate_ = up_ > kMaxExactPhases;
  phases_ = interpolate_ ? kMaxExactPhases : up_;
  const std::uint64_t rows = interpolate_ ? phases_ + 1 : phases_;
  table_.resize(rows * taps_per_output());
  for (std::uint64_t p = 0; p < rows; ++p) {
    taps_at(static_cast<double>(p) / static_cast<double>(phases_), &table_[p * taps_per_output()]);
  }
}

std::size_t Resampler::output_length(std::size_t num_input) const {
  // round(n * up / down), halves up, in integers
  return static_cast<std::size_t>((2 * static_cast<std::uint64_t>(num_input) * up_ + down_) / (2 * down_));
}

double Resampler::kernel(double offset) const {
  const double u = offset / static_cast<double>(half_width_);
  if (std::abs(u) >= 1.0) return 0.0;
  const double x = cutoff_ * offset;
  const double sinc = x == 0.0 ? 1.0 : std::sin(kPi * x) / (kPi * x);
  return cutoff_ * sinc * bessel_i0(beta_ * std::sqrt(1.0 - u * u)) / i0_beta_;
}

// Tap k multiplies input sample n0 - half_width + 1 + k, for an output at time n0 + frac.
void Resampler::taps_at(double frac, float* taps) const {
  for (std::size_t k = 0; k < taps_per_output(); ++k) {
    const double offset = frac + static_cast<double>(half_width_) - 1.0 - static_cast<double>(k);
    taps[k] = static_cast<float>(kernel(offset));
  }
}

void Resampler::process(const float* in, std::size_t n, float* out) const {
  const std::size_t m_out = output_length(n);
  if (up_ == 1 && down_ == 1) {
    std::copy(in, in + n, out);
    return;
  }
  const std::size_t taps = taps_per_output();
  // Zero margins so every output reads `taps` contiguous samples.
  std::vector<float> padded(n + taps + 1, 0.0f);
  std::copy(in, in + n, padded.begin() + static_cast<std::ptrdiff_t>(half_width_));
  for (std::size_t m = 0; m < m_out; ++m) {
    const std::uint64_t position = static_cast<std::uint64_t>(m) * down_;  // in units of 1/up input samples
    const std::uint64_t n0 = position / up_;
    const std::uint64_t phase = position % up_;
    const float* x = &padded[n0 + 1];
    if (!interpolate_) {
      out[m] = dot(x, &table_[phase * taps], taps);
      continue;
    }
    // frac * phases_ = row + weight, between table rows `row` and `row + 1`
    const std::uint64_t scaled = phase * phases_;
    const std::uint64_t row = scaled / up_;
    const float weight = static_cast<float>(static_cast<double>(scaled % up_) / static_cast<double>(up_));
    const float lower = dot(x, &table_[row * taps], taps);
    const float upper = dot(x, &table_[(row + 1) * taps], taps);
    out[m] = lower + weight * (upper - lower);
  }
}

std::vector<float> resample(const float* in, std::size_t n, std::int64_t src_rate, std::int64_t dst_rate) {
  const Resampler r(src_rate, dst_rate);
  std::vector<float> out(r.output_length(n));
  r.process(in, n, out.data());
  return out;
}

}  // namespace qasr
