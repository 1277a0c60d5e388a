// Streaming ring buffer for a long-running session: the recent PCM, the recent
// log-mel frames, and the sliding-window bookkeeping of the Qwen3-ASR encoder.
//
// PCM is fed in chunks of any size; an incremental MelStream turns it into raw
// log10 mel frames (not normalised), bit-identical to MelFrontEnd::log_mel over
// the whole signal.  Both are kept in fixed-capacity rings: the last
// `history_samples` samples and the last history_samples / kHopLength + 1 frames.
// Capacities are set once, so memory is bounded however long the stream runs.
//
// Every index is an absolute position in the stream (sample 0 is the first ever
// fed, frame t is centred on sample t * kHopLength).  The oldest data still held
// is [first_sample, samples_seen) and [first_frame, frames_ready); it moves
// forward as the rings overwrite old data and when the caller drop_before()s.
//
// The encoder sees frames in chunks of `chunk_frames` (one conv chunk), and the
// chunks in attention windows of `window_chunks` chunks.  Window i covers frames
// [i * window_frames, (i + 1) * window_frames).  A window is final when all its
// frames are present and can never change: whole windows while streaming, and
// also the last, partial one after finish().  Calls on one object are
// serialised by a mutex.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

#include "mel.hpp"

namespace qasr {

constexpr std::uint64_t kSamplesPerFrame = kHopLength;  // samples, frame t starts its hop at t * 160
constexpr std::uint64_t kHistoryMargin = kFftSize;      // samples beyond one window's hops: the FFT reach

// The least `history_samples` that holds one whole attention window plus the FFT
// margin: chunk_frames * window_chunks * 160 + 400 samples.  Throws
// std::invalid_argument when either count is 0 or the product overflows.
std::uint64_t min_history_samples(std::uint64_t chunk_frames, std::uint64_t window_chunks);

class StreamBuffer {
 public:
  // All arguments >= 1 (n_mels bins, chunk_frames frames, window_chunks chunks,
  // history_samples samples), and history_samples >= min_history_samples(
  // chunk_frames, window_chunks); throws std::invalid_argument otherwise.
  StreamBuffer(std::size_t n_mels, std::uint64_t chunk_frames, std::uint64_t window_chunks,
               std::uint64_t history_samples);

  std::size_t n_mels() const { return n_mels_; }
  std::uint64_t chunk_frames() const { return chunk_frames_; }
  std::uint64_t window_chunks() const { return window_chunks_; }
  std::uint64_t window_frames() const { return window_frames_; }
  std::uint64_t history_samples() const { return history_samples_; }
  std::uint64_t frame_capacity() const { return frame_capacity_; }  // frames, history_samples / 160 + 1

  std::uint64_t samples_seen() const;
  std::uint64_t frames_ready() const;
  bool finished() const;
  std::uint64_t first_sample() const;  // oldest sample still held
  std::uint64_t first_frame() const;   // oldest frame still held

  // Appends `count` samples (any count, 0 included) and returns the number of new
  // frames.  Throws std::runtime_error after finish() until reset().
  std::uint64_t accept(const float* pcm, std::size_t count);
  // Ends the stream: stores the tail frames (reflect padding at the end, as
  // MelStream::flush) and returns their number; a second finish() returns 0.
  std::uint64_t finish();
  void reset();

  // Copies of held data: samples [start, stop) as stop - start values, and frames
  // [start, stop) as [n_mels][stop - start] row-major.  Throw std::out_of_range,
  // naming the held range, unless first <= start <= stop <= seen / ready.
  std::vector<float> samples(std::uint64_t start, std::uint64_t stop) const;
  std::vector<float> frames(std::uint64_t start, std::uint64_t stop) const;

  // The caller will not ask again for frames before `frame` (nor samples before
  // frame * 160): the held ranges may start there, never past what was produced.
  void drop_before(std::uint64_t frame);

  // Sliding-window bookkeeping, in chunks, windows and frames.
  std::uint64_t complete_chunks() const;   // whole chunks, plus the partial tail after finish()
  std::uint64_t final_windows() const;     // windows whose frames are all present and final
  // Frames [start, stop) of window i, cut at frames_ready; std::out_of_range when
  // the window starts past frames_ready.
  std::pair<std::uint64_t, std::uint64_t> window(std::uint64_t i) const;
  // Frames of the window after the final ones, [start, frames_ready); empty
  // (start == stop == frames_ready) when nothing is open.
  std::pair<std::uint64_t, std::uint64_t> open_window() const;
  std::uint64_t dropped_windows() const;   // whole windows entirely before first_frame

 private:
  // At most this many samples go to the MelStream per call, so that the frames it
  // returns at once (and the temporary holding them) stay bounded for any input.
  static constexpr std::size_t kMelSliceSamples = 1024 * kHopLength;  // samples, 10.24 s

  void store_samples(const float* pcm, std::size_t count);       // into the PCM ring
  void store_frames(const std::vector<float>& mel);              // [n_mels][j] into the frame ring
  void advance_first();                                           // after the rings overwrote data
  std::uint64_t final_windows_locked() const;

  const std::size_t n_mels_;
  const std::uint64_t chunk_frames_, window_chunks_, window_frames_;
  const std::uint64_t history_samples_;  // PCM ring capacity, samples
  const std::uint64_t frame_capacity_;   // frame ring capacity, frames

  MelStream mel_;
  std::vector<float> pcm_;     // ring of history_samples_ samples, sample i at i % history_samples_
  std::vector<float> frames_;  // ring of [n_mels][frame_capacity_], frame t in column t % frame_capacity_
  std::uint64_t seen_ = 0;         // samples fed
  std::uint64_t ready_ = 0;        // frames produced
  std::uint64_t first_sample_ = 0;
  std::uint64_t first_frame_ = 0;
  bool finished_ = false;
  mutable std::mutex mutex_;
};

}  // namespace qasr
