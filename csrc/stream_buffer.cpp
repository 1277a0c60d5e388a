#include "stream_buffer.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

namespace qasr {
namespace {

constexpr std::uint64_t kMaxU64 = std::numeric_limits<std::uint64_t>::max();

std::string range_text(std::uint64_t start, std::uint64_t stop) {
  return "[" + std::to_string(start) + ", " + std::to_string(stop) + ")";
}

// Throws std::out_of_range, naming the held range [first, end), unless
// first <= start <= stop <= end.
void check_range(const char* what, std::uint64_t start, std::uint64_t stop, std::uint64_t first,
                 std::uint64_t end) {
  if (start <= stop && first <= start && stop <= end) return;
  const std::string held = "the held range is " + range_text(first, end);
  const std::string where = std::string("StreamBuffer.") + what + ": ";
  if (start > stop) {
    throw std::out_of_range(where + "start " + std::to_string(start) + " > stop " + std::to_string(stop) + "; " + held);
  }
  throw std::out_of_range(where + range_text(start, stop) + " is not held; " + held);
}

// Copies `count` values from src to a ring row of `capacity` slots, starting at
// slot `first_slot` and wrapping once at most (count <= capacity).
void copy_into_ring(const float* src, std::size_t count, float* row, std::size_t capacity, std::size_t first_slot) {
  const std::size_t before_wrap = std::min(count, capacity - first_slot);
  std::copy(src, src + before_wrap, row + first_slot);
  std::copy(src + before_wrap, src + count, row);
}

// The reverse: `count` values of a ring row from slot `first_slot` on, to dst.
void copy_from_ring(const float* row, std::size_t capacity, std::size_t first_slot, std::size_t count, float* dst) {
  const std::size_t before_wrap = std::min(count, capacity - first_slot);
  std::copy(row + first_slot, row + first_slot + before_wrap, dst);
  std::copy(row, row + (count - before_wrap), dst + before_wrap);
}

// Validates the constructor's arguments and returns window_frames.
std::uint64_t checked_window_frames(std::size_t n_mels, std::uint64_t chunk_frames, std::uint64_t window_chunks,
                                    std::uint64_t history_samples) {
  if (n_mels < 1) throw std::invalid_argument("StreamBuffer: n_mels must be >= 1");
  if (chunk_frames < 1) throw std::invalid_argument("StreamBuffer: chunk_frames must be >= 1");
  if (window_chunks < 1) throw std::invalid_argument("StreamBuffer: window_chunks must be >= 1");
  const std::uint64_t least = min_history_samples(chunk_frames, window_chunks);  // checks for overflow
  const std::uint64_t window_frames = chunk_frames * window_chunks;
  if (history_samples < least) {
    throw std::invalid_argument("StreamBuffer: history_samples must be >= " + std::to_string(least) +
                                " (one attention window, " + std::to_string(window_frames) + " frames * " +
                                std::to_string(kSamplesPerFrame) + " samples, + " + std::to_string(kHistoryMargin) +
                                " samples of FFT margin), got " + std::to_string(history_samples));
  }
  const std::uint64_t frame_capacity = history_samples / kSamplesPerFrame + 1;
  if (n_mels > std::numeric_limits<std::size_t>::max() / sizeof(float) / frame_capacity) {
    throw std::invalid_argument("StreamBuffer: n_mels * history_samples is too large");
  }
  return window_frames;
}

}  // namespace

std::uint64_t min_history_samples(std::uint64_t chunk_frames, std::uint64_t window_chunks) {
  if (chunk_frames < 1 || window_chunks < 1) throw std::invalid_argument("StreamBuffer: window is empty");
  if (chunk_frames > kMaxU64 / window_chunks ||
      chunk_frames * window_chunks > (kMaxU64 - kHistoryMargin) / kSamplesPerFrame) {
    throw std::invalid_argument("StreamBuffer: window of " + std::to_string(chunk_frames) + " * " +
                                std::to_string(window_chunks) + " frames is too large");
  }
  return chunk_frames * window_chunks * kSamplesPerFrame + kHistoryMargin;
}

StreamBuffer::StreamBuffer(std::size_t n_mels, std::uint64_t chunk_frames, std::uint64_t window_chunks,
                           std::uint64_t history_samples)
    : n_mels_(n_mels),
      chunk_frames_(chunk_frames),
      window_chunks_(window_chunks),
      window_frames_(checked_window_frames(n_mels, chunk_frames, window_chunks, history_samples)),
      history_samples_(history_samples),
      frame_capacity_(history_samples / kSamplesPerFrame + 1),
      mel_(n_mels),
      pcm_(static_cast<std::size_t>(history_samples)),
      frames_(n_mels * static_cast<std::size_t>(frame_capacity_)) {}

std::uint64_t StreamBuffer::samples_seen() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return seen_;
}

std::uint64_t StreamBuffer::frames_ready() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return ready_;
}

bool StreamBuffer::finished() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return finished_;
}

std::uint64_t StreamBuffer::first_sample() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return first_sample_;
}

std::uint64_t StreamBuffer::first_frame() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return first_frame_;
}

// Appends samples at seen_; only the last history_samples_ of a long input survive.
void StreamBuffer::store_samples(const float* pcm, std::size_t count) {
  const std::size_t capacity = static_cast<std::size_t>(history_samples_);
  const std::size_t skip = count > capacity ? count - capacity : 0;
  const std::size_t slot = static_cast<std::size_t>((seen_ + skip) % history_samples_);
  copy_into_ring(pcm + skip, count - skip, pcm_.data(), capacity, slot);
  seen_ += count;
}

// Appends frames at ready_ from the MelStream's [n_mels][j] layout, row by row.
void StreamBuffer::store_frames(const std::vector<float>& mel) {
  const std::size_t j = mel.size() / n_mels_;
  const std::size_t capacity = static_cast<std::size_t>(frame_capacity_);
  const std::size_t skip = j > capacity ? j - capacity : 0;
  const std::size_t slot = static_cast<std::size_t>((ready_ + skip) % frame_capacity_);
  for (std::size_t m = 0; m < n_mels_; ++m) {
    copy_into_ring(mel.data() + m * j + skip, j - skip, frames_.data() + m * capacity, capacity, slot);
  }
  ready_ += j;
}

void StreamBuffer::advance_first() {
  if (seen_ > history_samples_) first_sample_ = std::max(first_sample_, seen_ - history_samples_);
  if (ready_ > frame_capacity_) first_frame_ = std::max(first_frame_, ready_ - frame_capacity_);
}

std::uint64_t StreamBuffer::accept(const float* pcm, std::size_t count) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (finished_) throw std::runtime_error("StreamBuffer.accept: stream finished; call reset()");
  const std::uint64_t before = ready_;
  for (std::size_t done = 0; done < count;) {
    const std::size_t n = std::min(count - done, kMelSliceSamples);
    const std::vector<float> mel = mel_.accept(pcm + done, n);
    store_samples(pcm + done, n);
    store_frames(mel);
    done += n;
  }
  advance_first();
  return ready_ - before;
}

std::uint64_t StreamBuffer::finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (finished_) return 0;
  const std::uint64_t before = ready_;
  store_frames(mel_.flush());
  finished_ = true;
  advance_first();
  return ready_ - before;
}

void StreamBuffer::reset() {
  std::lock_guard<std::mutex> lock(mutex_);
  mel_.reset();
  seen_ = ready_ = first_sample_ = first_frame_ = 0;
  finished_ = false;
}

std::vector<float> StreamBuffer::samples(std::uint64_t start, std::uint64_t stop) const {
  std::lock_guard<std::mutex> lock(mutex_);
  check_range("samples", start, stop, first_sample_, seen_);
  std::vector<float> out(static_cast<std::size_t>(stop - start));
  if (!out.empty()) {
    copy_from_ring(pcm_.data(), pcm_.size(), static_cast<std::size_t>(start % history_samples_), out.size(),
                   out.data());
  }
  return out;
}

std::vector<float> StreamBuffer::frames(std::uint64_t start, std::uint64_t stop) const {
  std::lock_guard<std::mutex> lock(mutex_);
  check_range("frames", start, stop, first_frame_, ready_);
  const std::size_t count = static_cast<std::size_t>(stop - start);
  const std::size_t capacity = static_cast<std::size_t>(frame_capacity_);
  const std::size_t slot = static_cast<std::size_t>(start % frame_capacity_);
  std::vector<float> out(n_mels_ * count);
  if (count == 0) return out;
  for (std::size_t m = 0; m < n_mels_; ++m) {
    copy_from_ring(frames_.data() + m * capacity, capacity, slot, count, out.data() + m * count);
  }
  return out;
}

void StreamBuffer::drop_before(std::uint64_t frame) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::uint64_t sample = frame > kMaxU64 / kSamplesPerFrame ? kMaxU64 : frame * kSamplesPerFrame;
  first_frame_ = std::max(first_frame_, std::min(frame, ready_));
  first_sample_ = std::max(first_sample_, std::min(sample, seen_));
}

std::uint64_t StreamBuffer::complete_chunks() const {
  std::lock_guard<std::mutex> lock(mutex_);
  const bool partial_tail = finished_ && ready_ % chunk_frames_ != 0;
  return ready_ / chunk_frames_ + (partial_tail ? 1 : 0);
}

// While streaming only whole windows of whole chunks are final; once finished,
// no frame can change, so the last, partial window is final too.
std::uint64_t StreamBuffer::final_windows_locked() const {
  if (finished_) return ready_ / window_frames_ + (ready_ % window_frames_ != 0 ? 1 : 0);
  return (ready_ / chunk_frames_) / window_chunks_;
}

std::uint64_t StreamBuffer::final_windows() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return final_windows_locked();
}

std::pair<std::uint64_t, std::uint64_t> StreamBuffer::window(std::uint64_t i) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (i > ready_ / window_frames_) {  // i * window_frames_ > ready_, without overflow
    throw std::out_of_range("StreamBuffer.window: window " + std::to_string(i) + " starts past frames_ready (" +
                            std::to_string(ready_) + " frames; windows 0.." + std::to_string(ready_ / window_frames_) +
                            " have started)");
  }
  const std::uint64_t start = i * window_frames_;
  return {start, start + std::min(window_frames_, ready_ - start)};
}

std::pair<std::uint64_t, std::uint64_t> StreamBuffer::open_window() const {
  std::lock_guard<std::mutex> lock(mutex_);
  // After finish() the final windows may reach past frames_ready: nothing is open then.
  const std::uint64_t windows = final_windows_locked();
  const std::uint64_t start = windows > ready_ / window_frames_ ? ready_ : windows * window_frames_;
  return {start, ready_};
}

std::uint64_t StreamBuffer::dropped_windows() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return first_frame_ / window_frames_;
}

}  // namespace qasr
