"""Qwen3-ASR's text side: languages, the prompt, and the parsing of what the model writes.

The prompt is the checkpoint's chat template rendered (at export time, with a marker for the
context) for a system message holding the context and one user audio item, plus the generation
prompt; a forced language appends ``language X<asr_text>``. The model answers
``language X<asr_text>text`` (``language None`` when it hears no speech).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LANGUAGES = (
    "Chinese", "English", "Cantonese", "Arabic", "German", "French", "Spanish", "Portuguese", "Indonesian",
    "Italian", "Korean", "Russian", "Thai", "Vietnamese", "Japanese", "Turkish", "Hindi", "Malay", "Dutch",
    "Swedish", "Danish", "Finnish", "Polish", "Czech", "Filipino", "Persian", "Greek", "Romanian", "Hungarian",
    "Macedonian",
)
# ISO 639 codes (as Whisper users pass them) -> the names the model was trained with
CODES = {
    "zh": "Chinese", "en": "English", "yue": "Cantonese", "ar": "Arabic", "de": "German", "fr": "French",
    "es": "Spanish", "pt": "Portuguese", "id": "Indonesian", "it": "Italian", "ko": "Korean", "ru": "Russian",
    "th": "Thai", "vi": "Vietnamese", "ja": "Japanese", "tr": "Turkish", "hi": "Hindi", "ms": "Malay",
    "nl": "Dutch", "sv": "Swedish", "da": "Danish", "fi": "Finnish", "pl": "Polish", "cs": "Czech",
    "fil": "Filipino", "tl": "Filipino", "fa": "Persian", "el": "Greek", "ro": "Romanian", "hu": "Hungarian",
    "mk": "Macedonian",
}
ASR_TEXT = "<asr_text>"
LANGUAGE_PREFIX = "language "


def language_name(language: str | None) -> str | None:
    """The model's spelling of a language given by name (any case) or code; None for detection."""
    if language is None or not str(language).strip():
        return None
    s = str(language).strip()
    name = CODES.get(s.lower()) or s[:1].upper() + s[1:].lower()
    if name not in LANGUAGES:
        raise ValueError(f"unsupported language '{language}' (Qwen3-ASR knows: {', '.join(LANGUAGES)})")
    return name


@dataclass(frozen=True)
class PromptTemplate:
    before_context: str
    after_context: str

    def render(self, context: str, language: str | None) -> str:
        text = self.before_context + (context or "") + self.after_context
        if language:
            text += f"{LANGUAGE_PREFIX}{language}{ASR_TEXT}"
        return text


def collapse_repeats(text: str, times: int = 20, longest: int = 20) -> str:
    """The toolkit's cleanup of runaway output: a character repeated more than `times` times
    becomes one; then, left to right, the first piece of up to `longest` characters repeated at
    least `times` times in a row becomes one copy (and so on for the rest)."""
    text = re.sub("(.)\\1{%d,}" % times, "\\1", text, flags=re.S)
    out = []
    while True:
        hit = _first_repeat(text, times, longest)
        if hit is None:
            return "".join(out) + text
        start, size, end = hit
        out.append(text[:start + size])
        text = text[end:]


def _first_repeat(s: str, times: int, longest: int) -> tuple[int, int, int] | None:
    for start in range(len(s) - 2 * times + 1):
        for size in range(1, longest + 1):
            if start + size * times > len(s):
                break
            piece = s[start:start + size]
            if s[start:start + size * times] == piece * times:
                end = start + size * times
                while s[end:end + size] == piece:
                    end += size
                return start, size, end
    return None


def parse_output(raw: str, forced_language: str | None) -> tuple[str | None, str]:
    """(language or None, text) from the decoded output, as the official toolkit reads it."""
    s = raw.strip()
    if not s:
        return None, ""
    s = collapse_repeats(s)
    if forced_language:
        return forced_language, s
    if ASR_TEXT not in s:
        return None, s
    meta, text = s.split(ASR_TEXT, 1)
    if "language none" in meta.lower():
        return None, text.strip()
    for line in meta.splitlines():
        line = line.strip()
        if line.lower().startswith(LANGUAGE_PREFIX):
            value = line[len(LANGUAGE_PREFIX):].strip()
            return (value[:1].upper() + value[1:].lower()) if value else None, text.strip()
        if line:
            break
    return None, text.strip()


def merge_languages(languages: list[str | None]) -> str | None:
    """Languages of consecutive pieces in order, repeats and unknowns dropped: 'Chinese,English'."""
    out: list[str] = []
    for lang in languages:
        if lang and (not out or out[-1] != lang):
            out.append(lang)
    return ",".join(out) or None
