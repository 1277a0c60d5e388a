"""Device profiles are data: every shipped file loads and maps onto ONNX Runtime options."""

import onnxruntime as ort
import pytest
from qasr_edge.package import PRECISIONS
from qasr_edge.profiles import Profile, ProfileError, cpu_flags, list_profiles, load_profile

SHIPPED = ("cpu", "x86-64-avx2", "x86-64-avx512", "arm64", "jetson-gpu", "mobile")


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
