// Python bindings: module qasr_edge._core.  Arrays in and out are float32,
// C-contiguous numpy arrays; the GIL is released around the numeric work.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "mel.hpp"
#include "resample.hpp"

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

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "qasr_edge C++ audio core: log-mel front end, streaming mel, resampler";
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
}
