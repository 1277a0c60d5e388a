"""Device profiles are data: every shipped file loads and maps onto ONNX Runtime options."""

import os
import subprocess
import sys
from dataclasses import replace

import onnxruntime as ort
import pytest
from qasr_edge.package import PRECISIONS
from qasr_edge.profiles import Profile, ProfileError, cpu_flags, list_profiles, load_profile

SHIPPED = ("cpu", "cpu-lowmem", "x86-64-avx2", "x86-64-avx512", "arm64", "jetson-gpu", "cuda-gpu", "mobile")


def test_every_shipped_profile_loads_with_valid_settings():
    assert set(SHIPPED) <= set(list_profiles())
    for name in SHIPPED:
        prof = load_profile(name)
        assert prof.name == name and prof.description
        assert prof.precision in PRECISIONS
        assert prof.max_batch >= 1 and prof.memory_budget_mb > 0 and 320 <= prof.chunk_ms <= 640
        opts = prof.session_options()
        assert opts.intra_op_num_threads == prof.threads


def test_missing_provider_errors_or_falls_back_as_the_profile_says():
    have = set(ort.get_available_providers())
    jetson = load_profile("jetson-gpu")
    if not {"TensorrtExecutionProvider", "CUDAExecutionProvider"} <= have:
        with pytest.raises(ProfileError, match="provider"):
            jetson.resolved_providers()
    mobile = load_profile("mobile")
    chosen = [name for name, _ in mobile.resolved_providers()]
    assert chosen and set(chosen) <= have and chosen[-1] == "CPUExecutionProvider"


def test_a_provider_that_fails_to_start_errors_or_warns_as_the_profile_says(monkeypatch, capsys, tmp_path):
    """onnxruntime-gpu lists TensorRT even where its libraries are missing; the session then runs on
    what is left (after printing a notice) and the profile's on_missing_provider decides (seen on an
    H200 without TensorRT: bench/results/gpu_check_h200_2026-11-27.json)."""
    from qasr_edge import profiles

    class Session:   # what onnxruntime does when TensorRT cannot load: it retries without it
        def __init__(self, path, sess_options=None, providers=(), provider_options=()):
            print("EP Error: libnvinfer.so.10: cannot open shared object file; falling back")
            self.providers = [p for p in providers if p != "TensorrtExecutionProvider"]

        def get_providers(self):
            return self.providers

    monkeypatch.setattr(ort, "InferenceSession", Session)
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(profiles, "_preloaded", True)   # no CUDA libraries to look for here
    jetson = load_profile("jetson-gpu")
    with pytest.raises(ProfileError, match="could not start TensorrtExecutionProvider"):
        jetson.create_session(tmp_path / "g.onnx")
    with pytest.warns(RuntimeWarning, match="running on CUDAExecutionProvider, CPUExecutionProvider"):
        session = replace(jetson, on_missing_provider="fallback").create_session(tmp_path / "g.onnx")
    assert session.get_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert load_profile("cuda-gpu").create_session(tmp_path / "g.onnx").get_providers()[0] == "CUDAExecutionProvider"
    out = capsys.readouterr()
    assert "EP Error" not in out.out and "EP Error" in out.err   # stdout carries transcripts


def test_availability_says_what_a_profile_runs_on_here(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert load_profile("cpu").availability() == (True, "on CPU")
    usable, why = load_profile("jetson-gpu").availability()
    assert not usable and "TensorrtExecutionProvider" in why
    usable, why = load_profile("mobile").availability()   # on_missing_provider = "fallback"
    assert usable and why.startswith("on CPU (not in this build: ") and "Xnnpack" in why
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert load_profile("cuda-gpu").availability() == (True, "on CUDA, CPU")


def test_cpu_features_are_checked():
    prof = Profile(name="t", cpu_features=("avx512_vnni",))
    prof.check_cpu({"avx512_vnni", "avx2"})
    with pytest.raises(ProfileError, match="lacks avx512_vnni"):
        prof.check_cpu({"avx2"})
    prof.check_cpu(set())  # flags unknown (not Linux): no claim either way



X86_CPUINFO = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512_vnni\n"
ARM_CPUINFO = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd aes crc32 asimddp\n"


def test_cpu_flags_come_from_the_line_of_this_architecture():
    assert cpu_flags(X86_CPUINFO, "x86_64") == {"fpu", "sse2", "avx2", "avx512_vnni"}
    assert cpu_flags(ARM_CPUINFO, "aarch64") == {"fp", "asimd", "aes", "crc32", "asimddp"}
    # qemu-user: an arm64 process reads the x86 host's cpuinfo; its flags say nothing, so no check
    assert cpu_flags(X86_CPUINFO, "aarch64") == set()
    load_profile("arm64").check_cpu(cpu_flags(X86_CPUINFO, "aarch64"))
    with pytest.raises(ProfileError, match="lacks asimd"):
        load_profile("arm64").check_cpu(cpu_flags(X86_CPUINFO + "Features\t: fp\n", "aarch64"))

def test_provider_option_paths_expand_home(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[session]\nproviders = ["CPUExecutionProvider"]\n'
                    '[session.provider_options.CPUExecutionProvider]\ncache = "~/x"\n')
    (name, options), = load_profile(str(path)).resolved_providers()
    assert name == "CPUExecutionProvider" and not options["cache"].startswith("~")


# In a fresh process: apply a profile's [memory] table, then free an 8 MB block that sits below a
# live allocation. glibc's default (its threshold raised by a first mapped 8 MB block) keeps it in
# the heap; with the profile's threshold it is unmapped and RSS drops by its size.
_RETURNED = """
import sys, numpy as np
from qasr_edge.profiles import load_profile
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) // 1024
took = load_profile(sys.argv[1]).configure_process()["malloc_mmap_threshold"]
first = np.ones(2 << 20, np.float32); del first
block = np.ones(2 << 20, np.float32); pin = np.ones(1000)
before = rss(); del block
print(took, before - rss())
"""


def _returned_mb(tmp_path, profile_text: str, env: dict[str, str] | None = None) -> tuple[bool, int]:
    path = tmp_path / "p.toml"
    path.write_text(profile_text)
    out = subprocess.run([sys.executable, "-c", _RETURNED, str(path)], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})}).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc (Linux)")
def test_memory_table_sets_glibcs_mmap_threshold(tmp_path):
    assert load_profile("cpu").malloc_mmap_threshold_kb == 0          # speed first
    assert load_profile("cpu-lowmem").malloc_mmap_threshold_kb == 2048  # memory first
    assert Profile(name="t").malloc_mmap_threshold_kb == 0
    with pytest.raises(ProfileError, match="malloc_mmap_threshold_kb"):
        Profile(name="t", malloc_mmap_threshold_kb=-1)
    took, returned = _returned_mb(tmp_path, "[memory]\nmalloc_mmap_threshold_kb = 1024\n")
    assert took and returned >= 7
    took, returned = _returned_mb(tmp_path, "[memory]\nmalloc_mmap_threshold_kb = 0\n")
    assert not took and returned <= 1
    # the environment's setting wins over the profile's: glibc reads it at start, we leave it alone
    took, _ = _returned_mb(tmp_path, "[memory]\nmalloc_mmap_threshold_kb = 1024\n",
                           {"MALLOC_MMAP_THRESHOLD_": str(16 << 20)})
    assert not took


# In a fresh process: apply a profile's [memory] table, then write one byte every 2 MB of a zeroed
# 64 MB array. Without huge pages that makes 32 pages resident; with numpy's default, where the
# kernel grants huge pages on request (transparent_hugepage "madvise" or "always"), up to 2 MB each.
_SPARSE = """
import sys, numpy as np
from qasr_edge.profiles import load_profile
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) // 1024
took = load_profile(sys.argv[1]).configure_process()["numpy_hugepages"]
before = rss()
table = np.zeros(64 << 20, np.uint8)
table[::2 << 20] = 1
print(took, rss() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="resident memory read from /proc (Linux)")
def test_memory_table_can_keep_numpy_from_asking_for_huge_pages(tmp_path):
    assert load_profile("cpu").numpy_hugepages and not load_profile("cpu-lowmem").numpy_hugepages

    def sparse_mb(text: str, env: dict[str, str] | None = None) -> tuple[bool, int]:
        path = tmp_path / "p.toml"
        path.write_text(text)
        clean = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
        out = subprocess.run([sys.executable, "-c", _SPARSE, str(path)], capture_output=True, text=True, check=True,
                             env={**clean, **(env or {})}).stdout.split()
        return out[0] == "True", int(out[1])

    took, off = sparse_mb("[memory]\nnumpy_hugepages = false\n")
    assert took and off <= 4
    # numpy's default is left alone (how much it then makes resident depends on the kernel's
    # transparent_hugepage setting and on whether huge pages are free: up to the whole 64 MB)
    took, _ = sparse_mb("[memory]\nnumpy_hugepages = true\n")
    assert not took
    # the environment's setting wins over the profile's
    took, _ = sparse_mb("[memory]\nnumpy_hugepages = false\n", {"NUMPY_MADVISE_HUGEPAGE": "1"})
    assert not took


def test_a_profile_extends_another_key_by_key(tmp_path):
    cpu, low = load_profile("cpu"), load_profile("cpu-lowmem")
    assert low.name == "cpu-lowmem" and low.malloc_mmap_threshold_kb == 2048
    assert replace(low, name="cpu", description=cpu.description, malloc_mmap_threshold_kb=0, numpy_hugepages=True,
                   path=cpu.path) == cpu
    child = tmp_path / "child.toml"
    child.write_text('extends = "cpu"\n[session]\nintra_op_threads = 3\n[stream]\nbeam_size = 2\n')
    prof = load_profile(str(child))
    assert prof.name == "child" and prof.intra_op_threads == 3 and prof.stream_beam_size == 2
    assert prof.graph_optimization == cpu.graph_optimization and prof.config == cpu.config   # kept from cpu
    assert prof.chunk_ms == cpu.chunk_ms and prof.max_batch == cpu.max_batch
    loop = tmp_path / "loop.toml"
    loop.write_text(f'extends = "{loop}"\n')
    with pytest.raises(ProfileError, match="loop"):
        load_profile(str(loop))
