"""Family adapters: each model family (Whisper, Qwen3-ASR) behind the same narrow interface.

An adapter is built from a ModelPackage and a Profile and offers
`transcribe(audios: list[np.ndarray], options: TranscribeOptions) -> list[Transcript]`.
"""

from __future__ import annotations

from ..package import ModelPackage, PackageError
from ..profiles import Profile


def load_family(package: ModelPackage, profile: Profile):
    if package.family == "whisper":
        from .whisper import WhisperModel

        return WhisperModel(package, profile)
    if package.family == "qwen3_asr":
        from .qwen3_asr import Qwen3ASRModel

        return Qwen3ASRModel(package, profile)
    raise PackageError(f"{package.root}: unsupported model family '{package.family}'")
