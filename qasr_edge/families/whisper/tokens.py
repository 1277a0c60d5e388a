"""Whisper's special tokens and the non-speech symbols it should not emit."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ...tokenizer import Tokenizer

TIME_PRECISION = 0.02     # seconds per timestamp token step
INPUT_STRIDE = 2          # mel frames per encoder output position
FRAMES_PER_SECOND = 100   # mel frames per second (hop 160 at 16 kHz)
N_FRAMES = 3000           # mel frames in a 30 s window


@dataclass(frozen=True)
class WhisperTokens:
    eot: int
    sot: int
    translate: int
    transcribe: int
    sot_prev: int
    sot_lm: int
    no_speech: int
    no_timestamps: int
    timestamp_begin: int
    languages: dict[str, int]     # code -> token id

    @classmethod
    def from_manifest(cls, special: dict) -> "WhisperTokens":
        return cls(**{k: special[k] for k in (
            "eot", "sot", "translate", "transcribe", "sot_prev", "sot_lm", "no_speech",
            "no_timestamps", "timestamp_begin")}, languages=dict(special["languages"]))

    @property
    def multilingual(self) -> bool:
        return len(self.languages) > 1

    @cached_property
    def language_ids(self) -> list[int]:
        return list(self.languages.values())

    @cached_property
    def language_codes(self) -> list[str]:
        return list(self.languages.keys())

    def sot_sequence(self, language: str | None, task: str) -> list[int]:
        seq = [self.sot]
        if self.multilingual:
            if language not in self.languages:
                raise ValueError(f"unknown language '{language}' (this model knows: {', '.join(self.languages)})")
            seq += [self.languages[language], self.transcribe if task == "transcribe" else self.translate]
        return seq


def non_speech_tokens(tok: Tokenizer) -> set[int]:
    """Ids of symbols that mark speaker tags, music or annotations ("♪", "[", "(("...), which a
    transcript of speech should not contain; hyphens and apostrophes stay allowed inside words."""
    symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
    symbols += "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
    musical = set("♩♪♫♬♭♮♯")   # U+2640..U+267F: their first UTF-8 bytes are shared and safe to ban
    banned = {tok.encode(" -")[0], tok.encode(" '")[0]}
    for symbol in symbols + sorted(musical):
        for ids in (tok.encode(symbol), tok.encode(" " + symbol)):
            if len(ids) == 1 or symbol in musical:
                banned.add(ids[0])
    return banned
