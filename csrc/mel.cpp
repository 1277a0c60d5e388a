#include "mel.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

namespace qasr {
namespace {

constexpr double kTwoPi = 6.283185307179586476925286766559;

// Slaney mel scale (librosa `htk=False`): linear below 1 kHz, logarithmic above.
constexpr double kSlaneyHzPerMel = 200.0 / 3.0;
constexpr double kSlaneyLogStartHz = 1000.0;
constexpr double kSlaneyLogStartMel = 15.0;  // 1000 Hz / (200/3 Hz per mel)
const double kSlaneyLogStep = std::log(6.4) / 27.0;

double hz_to_mel(double hz) {
  if (hz < kSlaneyLogStartHz) return hz / kSlaneyHzPerMel;
  return kSlaneyLogStartMel + std::log(hz / kSlaneyLogStartHz) / kSlaneyLogStep;
}

double mel_to_hz(double mel) {
  if (mel < kSlaneyLogStartMel) return kSlaneyHzPerMel * mel;
  return kSlaneyLogStartHz * std::exp(kSlaneyLogStep * (mel - kSlaneyLogStartMel));
}

// numpy.linspace(start, stop, num): start + i * step, with the last point exactly `stop`.
std::vector<double> linspace(double start, double stop, std::size_t num) {
  std::vector<double> out(num);
  const double step = (stop - start) / static_cast<double>(num - 1);
  for (std::size_t i = 0; i < num; ++i) out[i] = start + static_cast<double>(i) * step;
  out[num - 1] = stop;
  return out;
}

// numpy's 'reflect' padding for any pad width: index j of the infinitely
// mirrored signal (edges not repeated) mapped into [0, n).
std::size_t reflect_index(std::int64_t j, std::uint64_t n) {
  if (n == 1) return 0;
  const std::int64_t period = 2 * (static_cast<std::int64_t>(n) - 1);
  std::int64_t r = std::llabs(j) % period;
  if (r >= static_cast<std::int64_t>(n)) r = period - r;
  return static_cast<std::size_t>(r);
}

// Samples the stream must hold before it can emit frame t without knowing the
// end of the signal: the frame's right edge, and sample 200 for the left reflection.
std::uint64_t samples_needed_for_frame(std::uint64_t t) {
  return std::max<std::uint64_t>(t * kHopLength + kCenterPad, kCenterPad + 1);
}

// Number of frames t with samples_needed_for_frame(t) <= seen.
std::uint64_t frames_computable(std::uint64_t seen) {
  return seen <= kCenterPad ? 0 : (seen - kCenterPad) / kHopLength + 1;
}

}  // namespace

std::vector<double> slaney_mel_filters(std::size_t n_mels) {
  if (n_mels == 0) throw std::invalid_argument("n_mels must be >= 1");
  const std::vector<double> mels = linspace(hz_to_mel(0.0), hz_to_mel(kMelMaxFrequency), n_mels + 2);
  std::vector<double> edges(n_mels + 2);  // filter corner frequencies, Hz
  for (std::size_t i = 0; i < mels.size(); ++i) edges[i] = mel_to_hz(mels[i]);
  const std::vector<double> bin_hz = linspace(0.0, kMelSampleRate / 2, kNumBins);

  std::vector<double> filters(n_mels * kNumBins);
  for (std::size_t m = 0; m < n_mels; ++m) {
    const double lower_width = edges[m + 1] - edges[m];
    const double upper_width = edges[m + 2] - edges[m + 1];
    const double area_norm = 2.0 / (edges[m + 2] - edges[m]);
    for (std::size_t k = 0; k < kNumBins; ++k) {
      const double rising = -(edges[m] - bin_hz[k]) / lower_width;
      const double falling = (edges[m + 2] - bin_hz[k]) / upper_width;
      filters[m * kNumBins + k] = std::max(0.0, std::min(rising, falling)) * area_norm;
    }
  }
  return filters;
}

MelFrontEnd::MelFrontEnd(std::size_t n_mels) : n_mels_(n_mels), window_(kFftSize), fft_(kFftSize) {
  for (std::size_t i = 0; i < kFftSize; ++i) {
    window_[i] = 0.5 - 0.5 * std::cos(kTwoPi * static_cast<double>(i) / static_cast<double>(kFftSize));
  }
  const std::vector<double> dense = slaney_mel_filters(n_mels);
  first_bin_.resize(n_mels);
  weights_.resize(n_mels);
  for (std::size_t m = 0; m < n_mels; ++m) {
    const double* row = &dense[m * kNumBins];
    std::size_t first = 0, last = kNumBins;
    while (first < kNumBins && row[first] == 0.0) ++first;
    while (last > first && row[last - 1] == 0.0) --last;
    first_bin_[m] = first;
    weights_[m].assign(row + first, row + last);
  }
}

MelFrontEnd::Scratch MelFrontEnd::make_scratch() const {
  Scratch s;
  s.windowed.resize(kFftSize);
  s.spectrum.resize(fft_.num_bins());
  s.fft_work.resize(fft_.scratch_size());
  s.power.resize(fft_.num_bins());
  return s;
}

void MelFrontEnd::frame(const float* samples, float* out, std::size_t out_stride, Scratch& s) const {
  for (std::size_t i = 0; i < kFftSize; ++i) s.windowed[i] = static_cast<double>(samples[i]) * window_[i];
  fft_.forward(s.windowed.data(), s.spectrum.data(), s.fft_work.data());
  for (std::size_t k = 0; k < kNumBins; ++k) s.power[k] = std::norm(s.spectrum[k]);
  for (std::size_t m = 0; m < n_mels_; ++m) {
    const std::vector<double>& w = weights_[m];
    const double* p = &s.power[first_bin_[m]];
    double energy = 0.0;
    for (std::size_t i = 0; i < w.size(); ++i) energy += w[i] * p[i];
    out[m * out_stride] = static_cast<float>(std::log10(std::max(energy, kLogFloor)));
  }
}

void MelFrontEnd::log_mel(const float* audio, std::size_t n, float* out) const {
  const std::size_t frames = num_frames(n);
  Scratch s = make_scratch();
  std::vector<float> padded(kFftSize);
  for (std::size_t t = 0; t < frames; ++t) {
    const std::int64_t start = static_cast<std::int64_t>(t * kHopLength) - static_cast<std::int64_t>(kCenterPad);
    const float* samples = audio + start;
    if (start < 0 || static_cast<std::size_t>(start) + kFftSize > n) {  // an edge frame: mirror
      for (std::size_t i = 0; i < kFftSize; ++i) padded[i] = audio[reflect_index(start + static_cast<std::int64_t>(i), n)];
      samples = padded.data();
    }
    frame(samples, out + t, frames, s);
  }
}

void normalize_log_mel(float* x, std::size_t count) {
  if (count == 0) return;
  const float floor = *std::max_element(x, x + count) - kDynamicRangeLog10;
  for (std::size_t i = 0; i < count; ++i) x[i] = (std::max(x[i], floor) + 4.0f) / 4.0f;
}

MelStream::MelStream(std::size_t n_mels)
    : front_end_(n_mels), scratch_(front_end_.make_scratch()), tail_(kTailSize), frame_(kFftSize) {
  head_.reserve(kHeadSize);
}

std::uint64_t MelStream::samples_seen() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return seen_;
}

std::uint64_t MelStream::frames_emitted() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return emitted_;
}

bool MelStream::finished() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return finished_;
}

void MelStream::reset() {
  std::lock_guard<std::mutex> lock(mutex_);
  head_.clear();
  seen_ = 0;
  emitted_ = 0;
  finished_ = false;
}

void MelStream::push(const float* pcm, std::size_t count) {
  if (seen_ < kHeadSize) {
    const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(count, kHeadSize - seen_));
    head_.insert(head_.end(), pcm, pcm + take);
  }
  for (std::size_t done = 0; done < count;) {  // into the ring, in at most two pieces per lap
    const std::size_t slot = static_cast<std::size_t>((seen_ + done) % kTailSize);
    const std::size_t n = std::min(count - done, kTailSize - slot);
    std::copy(pcm + done, pcm + done + n, tail_.begin() + static_cast<std::ptrdiff_t>(slot));
    done += n;
  }
  seen_ += count;
}

float MelStream::sample_at(std::uint64_t index) const {
  if (index < head_.size()) return head_[index];
  if (index >= seen_ || index + kTailSize < seen_) throw std::logic_error("MelStream: sample outside the buffers");
  return tail_[index % kTailSize];
}

// Gathers frame t exactly as MelFrontEnd::log_mel would for a signal of seen_
// samples; valid for every frame the stream emits (see samples_needed_for_frame).
void MelStream::emit_frame(std::uint64_t t, float* out, std::size_t out_stride) {
  const std::int64_t start = static_cast<std::int64_t>(t * kHopLength) - static_cast<std::int64_t>(kCenterPad);
  const std::int64_t seen = static_cast<std::int64_t>(seen_);
  if (start >= 0 && start + static_cast<std::int64_t>(kFftSize) == seen) {
    // The usual case: the frame is exactly the ring's contents, oldest sample at `first`.
    const auto first = static_cast<std::ptrdiff_t>(static_cast<std::uint64_t>(start) % kTailSize);
    const auto split = std::copy(tail_.begin() + first, tail_.end(), frame_.begin());
    std::copy(tail_.begin(), tail_.begin() + first, split);
  } else {
    for (std::size_t i = 0; i < kFftSize; ++i) {
      frame_[i] = sample_at(reflect_index(start + static_cast<std::int64_t>(i), seen_));
    }
  }
  front_end_.frame(frame_.data(), out, out_stride, scratch_);
}

std::vector<float> MelStream::accept(const float* pcm, std::size_t count) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (finished_) throw std::logic_error("MelStream.accept() after flush(); call reset() first");
  const std::uint64_t total = seen_ + count;
  const std::uint64_t ready = std::max(frames_computable(total), emitted_);
  const std::size_t j = static_cast<std::size_t>(ready - emitted_);
  std::vector<float> out(n_mels() * j);

  // Push only up to each frame's threshold, so every frame is computed while
  // its oldest sample is still in the tail ring.
  std::size_t pos = 0, written = 0;
  while (true) {
    while (written < j && samples_needed_for_frame(emitted_) <= seen_) {
      emit_frame(emitted_, out.data() + written, j);
      ++emitted_;
      ++written;
    }
    if (pos == count) break;
    const std::uint64_t need = samples_needed_for_frame(emitted_);
    const std::size_t take = written < j ? static_cast<std::size_t>(need - seen_) : count - pos;
    push(pcm + pos, take);
    pos += take;
  }
  return out;
}

std::vector<float> MelStream::flush() {
  std::lock_guard<std::mutex> lock(mutex_);
  finished_ = true;
  const std::uint64_t total_frames = num_frames(seen_);
  const std::size_t j = total_frames > emitted_ ? static_cast<std::size_t>(total_frames - emitted_) : 0;
  std::vector<float> out(n_mels() * j);
  for (std::size_t i = 0; i < j; ++i, ++emitted_) emit_frame(emitted_, out.data() + i, j);
  return out;
}

}  // namespace qasr
