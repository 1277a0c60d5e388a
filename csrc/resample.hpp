// Band-limited sample-rate conversion: a Kaiser-windowed sinc, applied as a
// polyphase filter for the rational ratio dst/src reduced by their gcd.
//
// When dst/src needs more than kMaxExactPhases filter phases (odd rates such as
// 44099 Hz), the kernel is tabulated at kMaxExactPhases phases per input sample
// and outputs are linearly interpolated between the two nearest phases.
//
// Response (fractions of the lower of the two Nyquist frequencies): flat to
// kPassbandEnd, at least kStopbandAttenuationDb down from kStopbandStart, so
// content above the new Nyquist does not alias.  Output sample m sits at input
// time m * src / dst (no delay); the signal is taken as zero outside [0, N).
// Output length is round(N * dst / src), halves rounded up (as soxr does).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace qasr {

constexpr double kPassbandEnd = 0.90;            // of the lower Nyquist
constexpr double kStopbandStart = 1.0;           // of the lower Nyquist
constexpr double kStopbandAttenuationDb = 100.0;  // dB
constexpr std::uint64_t kMaxExactPhases = 1024;   // filter phases tabulated exactly

class Resampler {
 public:
  // Rates in Hz, both >= 1.
  Resampler(std::int64_t src_rate, std::int64_t dst_rate);

  std::size_t output_length(std::size_t num_input) const;
  std::size_t taps_per_output() const { return 2 * half_width_; }

  // `out` holds output_length(n) samples.
  void process(const float* in, std::size_t n, float* out) const;

 private:
  double kernel(double offset) const;  // filter at `offset` input samples from the output time
  // Taps for an output time `frac` input samples (0 <= frac <= 1) after an input sample.
  void taps_at(double frac, float* taps) const;

  std::uint64_t up_, down_;       // dst / gcd, src / gcd
  double cutoff_;                 // -6 dB point, cycles per input sample, times 2
  double beta_;                   // Kaiser shape
  double i0_beta_;                // I0(beta), the window's peak
  std::size_t half_width_;        // kernel half-width, input samples
  std::uint64_t phases_;          // rows of table_ (plus one for frac = 1 when interpolating)
  bool interpolate_;              // phases_ < up_: blend neighbouring rows
  std::vector<float> table_;      // rows of taps_per_output() taps
};

// Convenience: a fresh Resampler, one call.
std::vector<float> resample(const float* in, std::size_t n, std::int64_t src_rate, std::int64_t dst_rate);

}  // namespace qasr
