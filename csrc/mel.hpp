// Whisper / Qwen3-ASR log-mel front end.
//
// Recipe (openai/whisper `log_mel_spectrogram`, transformers `WhisperFeatureExtractor`):
// 16 kHz PCM, 25 ms periodic Hann window (n_fft = 400), 10 ms hop (160 samples),
// frames centred on t * hop with reflect padding of n_fft / 2 at both ends,
// power spectrum, Slaney mel filterbank (0 .. 8 kHz, area-normalised),
// log10(max(mel, 1e-10)), and the last STFT frame dropped, so that N samples
// give N / 160 frames.  Output is [n_mels, frames], row-major, float32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "fft.hpp"

namespace qasr {

constexpr int kMelSampleRate = 16000;                   // Hz
constexpr std::size_t kFftSize = 400;                   // samples, 25 ms
constexpr std::size_t kHopLength = 160;                 // samples, 10 ms
constexpr std::size_t kCenterPad = kFftSize / 2;        // samples of reflect padding per side
constexpr std::size_t kNumBins = kFftSize / 2 + 1;      // one-sided spectrum bins
constexpr double kMelMaxFrequency = 8000.0;             // Hz, the Nyquist of 16 kHz
constexpr double kLogFloor = 1e-10;                     // mel power floor before log10
constexpr float kDynamicRangeLog10 = 8.0f;              // normalisation keeps max - 8 .. max

// Slaney-scale, Slaney-normalised triangular filters, [n_mels][kNumBins] in double,
// identical to transformers' mel_filter_bank(201, n_mels, 0, 8000, 16000, "slaney", "slaney").
std::vector<double> slaney_mel_filters(std::size_t n_mels);

// Number of log-mel frames for `num_samples` samples (the last STFT frame is dropped).
inline std::size_t num_frames(std::size_t num_samples) { return num_samples / kHopLength; }

// The immutable parts of the front end: window, FFT plan and filterbank.
// Safe to share between threads.
class MelFrontEnd {
 public:
  explicit MelFrontEnd(std::size_t n_mels);

  std::size_t n_mels() const { return n_mels_; }

  // Per-caller work buffers for `frame`.
  struct Scratch {
    std::vector<double> windowed;
    std::vector<cplx> spectrum, fft_work;
    std::vector<double> power;
  };
  Scratch make_scratch() const;

  // log10 mel energies of one frame of kFftSize samples (already padded),
  // written to out[m * out_stride] for m in [0, n_mels).
  void frame(const float* samples, float* out, std::size_t out_stride, Scratch& scratch) const;

  // Whole-signal log-mel: `out` holds n_mels * num_frames(n) values, [n_mels][frames].
  void log_mel(const float* audio, std::size_t n, float* out) const;

 private:
  std::size_t n_mels_;
  std::vector<double> window_;  // periodic Hann, kFftSize values
  RealFft fft_;
  // The filterbank stored sparsely: filter m covers bins [first_bin_[m], first_bin_[m] + weights_[m].size()).
  std::vector<std::size_t> first_bin_;
  std::vector<std::vector<double>> weights_;
};

// x = max(x, max(x) - 8); x = (x + 4) / 4, in float32 like the references. In place.
void normalize_log_mel(float* x, std::size_t count);

// Incremental log-mel: feed PCM in chunks of any size; the frames that become
// complete are returned, and flush() emits the tail with reflect padding at the end.
// Concatenating every output equals MelFrontEnd::log_mel over all the samples, bit for bit.
// Memory is bounded: the first kCenterPad + 1 samples (for the left reflection) and
// the last kFftSize samples.  Calls on one object are serialised by a mutex.
class MelStream {
 public:
  explicit MelStream(std::size_t n_mels);

  std::size_t n_mels() const { return front_end_.n_mels(); }
  std::uint64_t samples_seen() const;
  std::uint64_t frames_emitted() const;
  bool finished() const;

  // Appends `count` samples and returns the frames that became complete,
  // [n_mels][j] row-major (j = size / n_mels, possibly 0).
  std::vector<float> accept(const float* pcm, std::size_t count);
  // Ends the stream: returns the remaining frames, using reflect padding at the end.
  // Later accept() calls throw until reset(); a second flush() returns nothing.
  std::vector<float> flush();
  void reset();

 private:
  static constexpr std::size_t kHeadSize = kCenterPad + 1;  // samples 0..200 feed the left reflection
  static constexpr std::size_t kTailSize = kFftSize;        // the most recent samples
  static_assert(kTailSize == kFftSize, "emit_frame reads a whole frame as the ring's contents");

  void push(const float* pcm, std::size_t count);
  float sample_at(std::uint64_t index) const;  // index < seen_, held in head or tail
  void emit_frame(std::uint64_t t, float* out, std::size_t out_stride);

  MelFrontEnd front_end_;
  MelFrontEnd::Scratch scratch_;
  std::vector<float> head_;   // first kHeadSize samples (fewer while the stream is short)
  std::vector<float> tail_;   // ring buffer of the last kTailSize samples, sample i at i % kTailSize
  std::vector<float> frame_;  // kFftSize gathered samples of the frame being computed
  std::uint64_t seen_ = 0;
  std::uint64_t emitted_ = 0;
  bool finished_ = false;
  mutable std::mutex mutex_;
};

}  // namespace qasr
