"""The text side of a model package: a thin wrapper over the `tokenizers` library (Rust, no torch)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Iterable


class Tokenizer:
    """Byte-level BPE tokenizer loaded from a package's `tokenizer.json`.

    `special_limit` is the first id that is not text: ids at or above it are dropped by `decode`
    (Whisper's end-of-text and everything after it: language, task and timestamp tokens).
    """

    def __init__(self, path: str | Path, special_limit: int | None = None):
        import tokenizers

        self._tok = tokenizers.Tokenizer.from_file(str(path))
        self.special_limit = special_limit

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        ids = [int(i) for i in ids]
        if self.special_limit is not None:
            ids = [i for i in ids if i < self.special_limit]
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(int(token_id))

    @cached_property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)
