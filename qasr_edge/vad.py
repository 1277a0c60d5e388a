"""Voice-activity detection with the Silero VAD graph a package carries (`vad.onnx`).

Used as a gate: when Whisper itself suspects a window holds no speech, the detector decides.
"""

from __future__ import annotations

import numpy as np

from .package import ModelPackage
from .profiles import Profile


class SpeechDetector:
    def __init__(self, package: ModelPackage, profile: Profile):
        info = package.manifest["vad"]
        self.frame = int(info["frame_samples"])        # 512 samples = 32 ms at 16 kHz
        self.context = int(info["context_samples"])    # the model also sees the 64 samples before
        self.sample_rate = int(info["sample_rate"])
        self.session = profile.with_threads(1).create_session(package.root / info["file"])

    @classmethod
    def from_package(cls, package: ModelPackage, profile: Profile) -> "SpeechDetector | None":
        return cls(package, profile) if package.manifest.get("vad") else None

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability of each 32 ms frame of `audio` (16 kHz mono float32)."""
        n = -(-len(audio) // self.frame)
        padded = np.zeros(n * self.frame + self.context, dtype=np.float32)
        padded[self.context:self.context + len(audio)] = audio
        state = np.zeros((2, 1, 128), dtype=np.float32)
        sr = np.array(self.sample_rate, dtype=np.int64)
        out = np.empty(n, dtype=np.float32)
        for i in range(n):
            chunk = padded[i * self.frame:(i + 1) * self.frame + self.context][None]
            prob, state = self.session.run(None, {"input": chunk, "state": state, "sr": sr})
            out[i] = prob[0, 0]
        return out

    def speech_seconds(self, audio: np.ndarray, threshold: float = 0.5) -> float:
        return float(np.sum(self.probabilities(audio) > threshold)) * self.frame / self.sample_rate
