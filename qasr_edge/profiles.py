"""Device profiles: small data files in `profiles/` mapped onto ONNX Runtime session options.

Adding a device means adding a file; nothing here branches on device names.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import sys
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_PROFILE = "cpu"
_GRAPH_LEVELS = ("disable", "basic", "extended", "all")


class ProfileError(Exception):
    pass


def _profile_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent
    dirs = [here / "profiles", here.parent / "profiles"]  # installed wheel, then source checkout
    extra = os.environ.get("QASR_EDGE_PROFILES")
    if extra:
        dirs.insert(0, Path(extra))
    return [d for d in dirs if d.is_dir()]


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Profile:
    name: str
    description: str = ""
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    provider_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    on_missing_provider: str = "error"   # error | fallback (drop the missing provider, keep going)
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    graph_optimization: str = "all"
    cpu_mem_arena: bool = True
    mem_pattern: bool = True
    malloc_mmap_threshold_kb: int = 0    # glibc: blocks this large and larger are mapped fresh (0: its default)
    numpy_hugepages: bool = True         # numpy asks for transparent huge pages for large arrays
    config: dict[str, str] = field(default_factory=dict)   # ONNX Runtime session config entries
    precision: str = "fp32"
    max_batch: int = 8
    memory_budget_mb: int = 1024
    max_audio_s: float = 3600.0          # decoded audio one transcribe call holds at once
    chunk_ms: int = 640
    stream_beam_size: int = 5            # Whisper streams: beams per update
    cpu_features: tuple[str, ...] = ()   # CPU flags the profile is tuned for (/proc/cpuinfo names)
    path: Path | None = None

    def __post_init__(self):
        if self.graph_optimization not in _GRAPH_LEVELS:
            raise ProfileError(f"profile {self.name}: graph_optimization must be one of {_GRAPH_LEVELS}")
        if self.on_missing_provider not in ("error", "fallback"):
            raise ProfileError(f"profile {self.name}: on_missing_provider must be 'error' or 'fallback'")
        if self.max_batch < 1 or self.intra_op_threads < 0:
            raise ProfileError(f"profile {self.name}: max_batch >= 1 and intra_op_threads >= 0 required")
        if not self.max_audio_s > 0:
            raise ProfileError(f"profile {self.name}: batch max_audio_s must be > 0")
        if self.malloc_mmap_threshold_kb < 0:
            raise ProfileError(f"profile {self.name}: memory malloc_mmap_threshold_kb must be >= 0")
        if not 1 <= self.stream_beam_size <= 10:
            raise ProfileError(f"profile {self.name}: stream beam_size must be between 1 and 10")

    @property
    def threads(self) -> int:
        return self.intra_op_threads or available_cores()

    def with_threads(self, threads: int | None) -> "Profile":
        return self if not threads else replace(self, intra_op_threads=int(threads))

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> "Profile":
        session, memory = data.get("session", {}), data.get("memory", {})
        return cls(
            name=data.get("name", path.stem if path else "custom"),
            description=data.get("description", ""),
            providers=tuple(session.get("providers", cls.providers)),
            provider_options=session.get("provider_options", {}),
            on_missing_provider=session.get("on_missing_provider", "error"),
            intra_op_threads=int(session.get("intra_op_threads", 0)),
            inter_op_threads=int(session.get("inter_op_threads", 1)),
            graph_optimization=session.get("graph_optimization", "all"),
            cpu_mem_arena=bool(session.get("cpu_mem_arena", True)),
            mem_pattern=bool(session.get("mem_pattern", True)),
            malloc_mmap_threshold_kb=int(memory.get("malloc_mmap_threshold_kb", 0)),
            numpy_hugepages=bool(memory.get("numpy_hugepages", True)),
            config={str(k): str(v) for k, v in session.get("config", {}).items()},
            precision=data.get("model", {}).get("precision", "fp32"),
            max_batch=int(data.get("batch", {}).get("max_batch", 8)),
            memory_budget_mb=int(data.get("batch", {}).get("memory_budget_mb", 1024)),
            max_audio_s=float(data.get("batch", {}).get("max_audio_s", 3600.0)),
            chunk_ms=int(data.get("stream", {}).get("chunk_ms", 640)),
            stream_beam_size=int(data.get("stream", {}).get("beam_size", 5)),
            cpu_features=tuple(data.get("device", {}).get("cpu_features", ())),
            path=path,
        )

    def session_options(self):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = self.inter_op_threads
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.graph_optimization]
        opts.enable_cpu_mem_arena = self.cpu_mem_arena
        opts.enable_mem_pattern = self.mem_pattern
        opts.log_severity_level = 3
        for key, value in self.config.items():
            opts.add_session_config_entry(key, value)
        return opts

    def configure_process(self) -> dict[str, bool]:
        """Apply the profile's process-wide memory settings; says which took effect."""
        return {"malloc_mmap_threshold": set_malloc_mmap_threshold(self.malloc_mmap_threshold_kb),
                "numpy_hugepages": set_numpy_hugepages(self.numpy_hugepages)}

    def check_cpu(self, flags: set[str] | None = None) -> None:
        """Stop with a message when this CPU lacks a feature the profile is tuned for."""
        flags = cpu_flags() if flags is None else flags
        missing = [f for f in self.cpu_features if f not in flags]
        if flags and missing:
            raise ProfileError(f"profile {self.name} is for CPUs with {', '.join(self.cpu_features)}; this one "
                               f"lacks {', '.join(missing)} (try --profile cpu)")

    def resolved_providers(self) -> list[tuple[str, dict[str, Any]]]:
        import onnxruntime as ort

        self.check_cpu()
        have = set(ort.get_available_providers())
        chosen = []
        for name in self.providers:
            if name in have:
                options = {k: os.path.expanduser(v) if isinstance(v, str) and v.startswith("~") else v
                           for k, v in self.provider_options.get(name, {}).items()}
                chosen.append((name, options))
            elif self.on_missing_provider == "error":
                raise ProfileError(
                    f"profile {self.name} needs the ONNX Runtime provider {name}, which this onnxruntime "
                    f"build lacks (available: {', '.join(sorted(have))}); install the matching onnxruntime "
                    f"package or pick another --profile"
                )
        if not chosen:
            chosen.append(("CPUExecutionProvider", {}))
        return chosen

    def availability(self) -> tuple[bool, str]:
        """(usable here, why or with what): the CPU features and the onnxruntime build's providers
        checked as loading a model would. A provider that is listed can still fail to start (see
        create_session); that shows only when a session is made."""
        try:
            chosen = [name for name, _ in self.resolved_providers()]
        except ProfileError as exc:
            return False, str(exc)
        short = [name.removesuffix("ExecutionProvider") for name in chosen]
        dropped = [name.removesuffix("ExecutionProvider") for name in self.providers if name not in chosen]
        return True, "on " + ", ".join(short) + (f" (not in this build: {', '.join(dropped)})" if dropped else "")

    def create_session(self, model_path: str | Path):
        """An ONNX Runtime session on the profile's providers. A provider this onnxruntime build has
        can still fail to start (onnxruntime-gpu without TensorRT's or cuDNN's libraries); ONNX
        Runtime then runs the graph on the providers left, so that is checked here and handled as
        `on_missing_provider` says."""
        import onnxruntime as ort

        providers = self.resolved_providers()
        names = [name for name, _ in providers]
        gpu = bool(set(names) & _GPU_PROVIDERS)
        if gpu:
            preload_gpu_libraries()
        # onnxruntime prints its own notice on stdout when a GPU provider fails to start and it
        # retries without (TensorRT without its libraries); stdout carries transcripts here
        with contextlib.redirect_stdout(sys.stderr) if gpu else contextlib.nullcontext():
            session = ort.InferenceSession(
                str(model_path),
                sess_options=self.session_options(),
                providers=names,
                provider_options=[opts for _, opts in providers],
            )
        started = session.get_providers()
        failed = [name for name in names if name not in started]
        if failed:
            message = (f"profile {self.name}: ONNX Runtime could not start {', '.join(failed)} (its libraries "
                       f"are missing or do not match this onnxruntime build; ONNX Runtime's log says which)")
            if self.on_missing_provider == "error":
                raise ProfileError(f"{message}; install them or pick another --profile")
            warnings.warn(f"{message}; running on {', '.join(started)}", RuntimeWarning, stacklevel=2)
        return session


_GPU_PROVIDERS = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}


def preload_gpu_libraries() -> None:
    """Load the CUDA and cuDNN libraries of NVIDIA's pip packages (nvidia-cublas, nvidia-cudnn-cu13 and the like)
    where they are installed, so that onnxruntime-gpu finds them without LD_LIBRARY_PATH; libraries
    installed system-wide (JetPack) are found anyway. onnxruntime >= 1.21; once per process."""
    global _preloaded
    if _preloaded:
        return
    _preloaded = True
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        with contextlib.redirect_stdout(sys.stderr):   # it prints notes; stdout carries transcripts
            ort.preload_dlls(msvc=False)


_preloaded = False


_M_MMAP_THRESHOLD = -3   # mallopt parameter (glibc's malloc.h)


def set_malloc_mmap_threshold(kb: int) -> bool:
    """Have glibc's malloc map blocks of `kb` KiB and more fresh, and unmap them when freed.

    By default glibc raises this threshold to the size of each mapped block it frees (up to 32 MB),
    so after the first large block every later one comes from the heap, which keeps freed memory
    it cannot give back. ONNX Runtime's first run of a graph allocates each activation on its own,
    and for Whisper's encoder that left ~100 MB of freed heap behind; set once, the threshold stays
    fixed (the dynamic raising ends). Process-wide: of the profiles loaded, the last one that sets
    it decides. Does nothing for 0, where the C library is not glibc, or where the environment sets
    MALLOC_MMAP_THRESHOLD_ (the user's choice wins).
    """
    if kb <= 0 or "MALLOC_MMAP_THRESHOLD_" in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version   # noqa: B018  glibc only (musl and others lack it)
    except (OSError, AttributeError):
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(kb) * 1024))


def set_numpy_hugepages(enabled: bool) -> bool:
    """Whether numpy asks the kernel for transparent huge pages (`madvise(MADV_HUGEPAGE)`) for the
    arrays it allocates from now on; numpy's default is to ask, for arrays of 4 MB and more.

    With huge pages, touching one byte of an array makes 2 MB of it resident: arrays that are
    allocated zeroed and filled as they go (a key-value cache with room for the whole text context)
    cost their whole size instead of what is written. Does nothing when
    asked for numpy's default, or where the environment sets NUMPY_MADVISE_HUGEPAGE (the user's
    choice wins). Process-wide, like glibc's threshold.
    """
    if enabled or "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        return False
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:   # numpy 1.x
        from numpy.core.multiarray import _set_madvise_hugepage
    _set_madvise_hugepage(False)
    return True


# Which /proc/cpuinfo line lists the feature flags, by `platform.machine()`.
_FLAG_LINES = {"x86_64": "flags", "amd64": "flags", "i686": "flags", "i386": "flags",
               "aarch64": "Features", "arm64": "Features", "armv7l": "Features", "armv8l": "Features"}


def cpu_flags(cpuinfo: str | None = None, machine: str | None = None) -> set[str]:
    """The CPU's feature flags as Linux names them (x86 "flags", ARM "Features"); empty when unknown.

    Only the line that belongs to this process's architecture counts. Under user-mode emulation
    (qemu-user) /proc/cpuinfo describes the host: an arm64 process would read x86 "flags" that say
    nothing about the CPU it runs on, so the flags are unknown and no profile check is made.
    """
    key = _FLAG_LINES.get((machine or platform.machine()).lower())
    if key is None:
        return set()
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return set(value.split())
    return set()


def list_profiles() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in reversed(_profile_dirs()):
        for path in sorted(d.glob("*.toml")):
            found[path.stem] = path
    return dict(sorted(found.items()))


def load_profile(name_or_path: str | Path | Profile | None = None) -> Profile:
    """A profile by name (a file in `profiles/`), by path to a .toml file, or the default."""
    if isinstance(name_or_path, Profile):
        return name_or_path
    name_or_path = name_or_path or os.environ.get("QASR_EDGE_PROFILE") or DEFAULT_PROFILE
    path, data = _profile_data(name_or_path)
    return Profile.from_dict(data, path=path)


def _profile_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        return path
    profiles = list_profiles()
    if str(name_or_path) not in profiles:
        raise ProfileError(f"unknown profile '{name_or_path}' (available: {', '.join(profiles) or 'none'})")
    return profiles[str(name_or_path)]


def _profile_data(name_or_path: str | Path, seen: tuple[Path, ...] = ()) -> tuple[Path, dict[str, Any]]:
    """A profile file's tables; `extends = "NAME"` starts from that profile's and overrides them key
    by key (a table's keys one by one, so a profile states only what differs)."""
    path = _profile_path(name_or_path)
    if path.resolve() in seen:
        raise ProfileError(f"{path}: profiles extend each other in a loop")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"{path}: unreadable profile ({exc})") from None
    base = data.pop("extends", None)
    if base is None:
        return path, data
    _, merged = _profile_data(base, (*seen, path.resolve()))
    merged.pop("name", None)
    return path, _merge(merged, data)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
