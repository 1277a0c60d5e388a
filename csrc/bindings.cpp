// Python bindings: module qasr_edge._core.  Arrays in and out are float32,
// C-contiguous numpy arrays; the GIL is released around the numeric work.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mel.hpp"
#include "resample.hpp"
#include "stream_buffer.hpp"

namespace py = pybind11;

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// A float32, C-contiguous copy or view of `obj`.  Floating-point input of any
// width is converted; integer PCM is refused, since its scale is ambiguous.
FloatArray as_float32(const py::handle& obj, const char* what) {
  py::array a = py::array::ensure(obj);
  if (!a) throw py::type_error(std::string(what) + ": expected an array of floating-point samples");
  const char kind = a.dtype().kind();
  if (kind != 'f') {
    throw py::type_error(std::string(what) + ": expected floating-point samples, got dtype " +
                         std::string(py::str(a.dtype())) + " (scale integer PCM to [-1, 1] first)");
  }
  return FloatArray::ensure(a);
}

FloatArray as_pcm(const py::handle& obj, const char* what) {
  FloatArray a = as_float32(obj, what);
  if (a.ndim() != 1) {
    throw py::value_error(std::string(what) + ": expected a 1-D (mono) array, got " + std::to_string(a.ndim()) + "-D");
  }
  return a;
}

std::size_t checked_n_mels(long n_mels) {
  if (n_mels < 1) throw py::value_error("n_mels must be >= 1, got " + std::to_string(n_mels));
  return static_cast<std::size_t>(n_mels);
}

// Hands a vector's buffer to numpy without copying.
py::array_t<float> to_numpy(std::vector<float>&& data, std::size_t rows, std::size_t cols) {
  auto* owned = new std::vector<float>(std::move(data));
  py::capsule free_when_done(owned, [](void* p) { delete static_cast<std::vector<float>*>(p); });
  return py::array_t<float>({rows, cols}, owned->data(), free_when_done);
}

py::array_t<float> to_numpy(std::vector<float>&& data) {
  auto* owned = new std::vector<float>(std::move(data));
  py::capsule free_when_done(owned, [](void* p) { delete static_cast<std::vector<float>*>(p); });
  return py::array_t<float>(static_cast<py::ssize_t>(owned->size()), owned->data(), free_when_done);
}

py::array_t<float> log_mel(const py::handle& audio_obj, long n_mels_arg) {
  const std::size_t n_mels = checked_n_mels(n_mels_arg);
  FloatArray audio = as_pcm(audio_obj, "log_mel");
  const std::size_t n = static_cast<std::size_t>(audio.shape(0));
  const std::size_t frames = qasr::num_frames(n);
  py::array_t<float> out({n_mels, frames});
  const float* in = audio.data();
  float* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    const qasr::MelFrontEnd front_end(n_mels);
    front_end.log_mel(in, n, dst);
  }
  return out;
}

py::array_t<float> normalize_log_mel(const py::handle& x_obj) {
  FloatArray x = as_float32(x_obj, "normalize_log_mel");
  if (x.ndim() != 2) throw py::value_error("normalize_log_mel: expected a 2-D [n_mels, frames] array");
  py::array_t<float> out({x.shape(0), x.shape(1)});
  std::copy(x.data(), x.data() + x.size(), out.mutable_data());
  float* dst = out.mutable_data();
  const std::size_t count = static_cast<std::size_t>(x.size());
  {
    py::gil_scoped_release release;
    qasr::normalize_log_mel(dst, count);
  }
  return out;
}

py::array_t<double> mel_filters(long n_mels_arg) {
  const std::size_t n_mels = checked_n_mels(n_mels_arg);
  const std::vector<double> f = qasr::slaney_mel_filters(n_mels);
  py::array_t<double> out({n_mels, qasr::kNumBins});
  std::copy(f.begin(), f.end(), out.mutable_data());
  return out;
}

py::array_t<float> resample(const py::handle& x_obj, long src_rate, long dst_rate) {
  if (src_rate < 1 || dst_rate < 1) {
    throw py::value_error("resample: rates must be positive, got " + std::to_string(src_rate) + " -> " +
                          std::to_string(dst_rate));
  }
  FloatArray x = as_pcm(x_obj, "resample");
  const std::size_t n = static_cast<std::size_t>(x.shape(0));
  const qasr::Resampler resampler(src_rate, dst_rate);
  py::array_t<float> out(static_cast<py::ssize_t>(resampler.output_length(n)));
  const float* in = x.data();
  float* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    resampler.process(in, n, dst);
  }
  return out;
}

py::array_t<float> stream_accept(qasr::MelStream& stream, const py::handle& pcm_obj) {
  FloatArray pcm = as_pcm(pcm_obj, "MelStream.accept");
  std::vector<float> frames;
  {
    py::gil_scoped_release release;
    frames = stream.accept(pcm.data(), static_cast<std::size_t>(pcm.shape(0)));
  }
  const std::size_t n_mels = stream.n_mels();
  return to_numpy(std::move(frames), n_mels, frames.size() / n_mels);
}

py::array_t<float> stream_flush(qasr::MelStream& stream) {
  std::vector<float> frames;
  {
    py::gil_scoped_release release;
    frames = stream.flush();
  }
  const std::size_t n_mels = stream.n_mels();
  return to_numpy(std::move(frames), n_mels, frames.size() / n_mels);
}

// --- StreamBuffer: counts and indices arrive as Python ints, checked here for sign ---

std::uint64_t checked_count(long long value, const char* name) {
  if (value < 1) throw py::value_error(std::string("StreamBuffer: ") + name + " must be >= 1, got " + std::to_string(value));
  return static_cast<std::uint64_t>(value);
}

qasr::StreamBuffer* make_stream_buffer(long n_mels, long long chunk_frames, long long window_chunks,
                                       long long history_samples) {
  const std::size_t mels = checked_n_mels(n_mels);
  const std::uint64_t chunk = checked_count(chunk_frames, "chunk_frames");
  const std::uint64_t chunks = checked_count(window_chunks, "window_chunks");
  if (history_samples < 0) {  // the C++ side checks the minimum of non-negative values
    throw py::value_error("StreamBuffer: history_samples must be >= " +
                          std::to_string(qasr::min_history_samples(chunk, chunks)) + ", got " +
                          std::to_string(history_samples));
  }
  return new qasr::StreamBuffer(mels, chunk, chunks, static_cast<std::uint64_t>(history_samples));
}

// A stream position for a read: negative ones are outside every held range.
std::uint64_t checked_position(long long value, const char* what, std::uint64_t first, std::uint64_t end) {
  if (value < 0) {
    throw py::index_error(std::string("StreamBuffer.") + what + ": position " + std::to_string(value) +
                          " is negative; the held range is [" + std::to_string(first) + ", " + std::to_string(end) + ")");
  }
  return static_cast<std::uint64_t>(value);
}

py::array_t<float> buffer_samples(const qasr::StreamBuffer& buffer, long long start, long long stop) {
  const std::uint64_t first = buffer.first_sample(), end = buffer.samples_seen();
  const std::uint64_t a = checked_position(start, "samples", first, end);
  const std::uint64_t b = checked_position(stop, "samples", first, end);
  std::vector<float> out;
  {
    py::gil_scoped_release release;
    out = buffer.samples(a, b);
  }
  return to_numpy(std::move(out));
}

py::array_t<float> buffer_frames(const qasr::StreamBuffer& buffer, long long start, long long stop) {
  const std::uint64_t first = buffer.first_frame(), end = buffer.frames_ready();
  const std::uint64_t a = checked_position(start, "frames", first, end);
  const std::uint64_t b = checked_position(stop, "frames", first, end);
  std::vector<float> out;
  {
    py::gil_scoped_release release;
    out = buffer.frames(a, b);
  }
  return to_numpy(std::move(out), buffer.n_mels(), static_cast<std::size_t>(b - a));
}

std::uint64_t buffer_accept(qasr::StreamBuffer& buffer, const py::handle& pcm_obj) {
  FloatArray pcm = as_pcm(pcm_obj, "StreamBuffer.accept");
  py::gil_scoped_release release;
  return buffer.accept(pcm.data(), static_cast<std::size_t>(pcm.shape(0)));
}

std::uint64_t buffer_finish(qasr::StreamBuffer& buffer) {
  py::gil_scoped_release release;
  return buffer.finish();
}

std::pair<std::uint64_t, std::uint64_t> buffer_window(const qasr::StreamBuffer& buffer, long long i) {
  if (i < 0) throw py::index_error("StreamBuffer.window: window " + std::to_string(i) + " is negative");
  return buffer.window(static_cast<std::uint64_t>(i));
}

void buffer_drop_before(qasr::StreamBuffer& buffer, long long frame) {
  if (frame < 0) throw py::value_error("StreamBuffer.drop_before: frame must be >= 0, got " + std::to_string(frame));
  buffer.drop_before(static_cast<std::uint64_t>(frame));
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "qasr_edge C++ audio core: log-mel front end, streaming mel, stream buffer, resampler";
  m.attr("SAMPLE_RATE") = qasr::kMelSampleRate;
  m.attr("N_FFT") = qasr::kFftSize;
  m.attr("HOP_LENGTH") = qasr::kHopLength;

  m.def("log_mel", &log_mel, py::arg("audio"), py::arg("n_mels"),
        "Raw log10 mel spectrogram, float32[n_mels, N // 160], of 16 kHz mono float32[N] audio.");
  m.def("normalize_log_mel", &normalize_log_mel, py::arg("x"),
        "Whisper normalisation as a new array: x = max(x, max(x) - 8); x = (x + 4) / 4.");
  m.def("mel_filters", &mel_filters, py::arg("n_mels"),
        "The Slaney mel filterbank used by log_mel, float64[n_mels, 201].");
  m.def("resample", &resample, py::arg("x"), py::arg("src_rate"), py::arg("dst_rate"),
        "Band-limited resampling of mono float32[N]; returns round(N * dst / src) samples.");

  py::class_<qasr::MelStream>(m, "MelStream",
                              "Incremental log-mel: concatenated outputs of accept() and flush() "
                              "equal log_mel() over all the audio.")
      .def(py::init([](long n_mels) { return new qasr::MelStream(checked_n_mels(n_mels)); }), py::arg("n_mels"))
      .def("accept", &stream_accept, py::arg("pcm"),
           "Append samples; returns the newly complete frames, float32[n_mels, j] (j may be 0).")
      .def("flush", &stream_flush, "End of stream: returns the remaining frames (reflect padding at the end).")
      .def("reset", &qasr::MelStream::reset, "Forget all audio; start a new stream.")
      .def_property_readonly("n_mels", &qasr::MelStream::n_mels)
      .def_property_readonly("samples_seen", &qasr::MelStream::samples_seen)
      .def_property_readonly("frames_emitted", &qasr::MelStream::frames_emitted)
      .def_property_readonly("finished", &qasr::MelStream::finished);

  using SB = qasr::StreamBuffer;
  py::class_<SB>(m, "StreamBuffer",
                 "Bounded streaming state: the last history_samples of PCM, their raw log-mel frames "
                 "(equal to log_mel() over all the audio), and the encoder's chunk/attention-window "
                 "bookkeeping.  Positions are absolute sample / frame indices in the stream.")
      .def(py::init(&make_stream_buffer), py::arg("n_mels"), py::arg("chunk_frames"), py::arg("window_chunks"),
           py::arg("history_samples"))
      .def("accept", &buffer_accept, py::arg("pcm"),
           "Append float32[N] samples (N may be 0); returns the number of new frames.")
      .def("finish", &buffer_finish,
           "End of stream: store the tail frames (reflect padding at the end); returns their number.")
      .def("reset", &SB::reset, "Forget all audio; start a new stream.")
      .def("samples", &buffer_samples, py::arg("start"), py::arg("stop"),
           "Copy of samples [start, stop), float32[stop - start]; IndexError outside "
           "[first_sample, samples_seen).")
      .def("frames", &buffer_frames, py::arg("start"), py::arg("stop"),
           "Copy of raw log-mel frames [start, stop), float32[n_mels, stop - start]; IndexError outside "
           "[first_frame, frames_ready).")
      .def("drop_before", &buffer_drop_before, py::arg("frame"),
           "Frames before `frame` (and samples before frame * 160) will not be read again.")
      .def("window", &buffer_window, py::arg("i"),
           "(start_frame, stop_frame) of attention window i, cut at frames_ready.")
      .def_property_readonly("n_mels", &SB::n_mels)
      .def_property_readonly("chunk_frames", &SB::chunk_frames, "Frames per encoder (conv) chunk.")
      .def_property_readonly("window_chunks", &SB::window_chunks, "Chunks per attention window.")
      .def_property_readonly("window_frames", &SB::window_frames, "Frames per attention window.")
      .def_property_readonly("history_samples", &SB::history_samples, "PCM ring capacity, samples.")
      .def_property_readonly("frame_capacity", &SB::frame_capacity,
                             "Frame ring capacity, frames: history_samples // 160 + 1.")
      .def_property_readonly("samples_seen", &SB::samples_seen)
      .def_property_readonly("frames_ready", &SB::frames_ready, "Frames produced so far.")
      .def_property_readonly("finished", &SB::finished)
      .def_property_readonly("first_sample", &SB::first_sample, "Oldest sample still held.")
      .def_property_readonly("first_frame", &SB::first_frame, "Oldest frame still held.")
      .def_property_readonly("complete_chunks", &SB::complete_chunks,
                             "Whole chunks produced, plus the partial tail chunk after finish().")
      .def_property_readonly("final_windows", &SB::final_windows,
                             "Attention windows whose frames are all present and final (after finish(), "
                             "the partial last window too).")
      .def_property_readonly("open_window", &SB::open_window,
                             "(start_frame, stop_frame) of the window after the final ones; start == stop when "
                             "nothing is open.")
      .def_property_readonly("dropped_windows", &SB::dropped_windows,
                             "Whole windows entirely before first_frame (their frames are gone).");
}
