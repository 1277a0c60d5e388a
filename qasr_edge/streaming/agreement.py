"""Commit policies over successive hypotheses of the same growing audio (pure functions)."""

from __future__ import annotations

from typing import Callable, Sequence


class WordStarts:
    """Which token ids begin a word: a leading space, or a character of a script written without
    spaces (every such character is a word), or one of `also` (markers after which text starts).
    Answers are cached per id."""

    def __init__(self, tokenizer, also: tuple[int, ...] = ()):
        self.tokenizer, self.also = tokenizer, set(also)
        self._known: dict[int, bool] = {}

    def __call__(self, token: int) -> bool:
        known = self._known.get(token)
        if known is None:
            first = self.tokenizer.decode([token])[:1]
            known = first == " " or (first.isalpha() and not first.isascii()) or token in self.also
            self._known[token] = known
        return known


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def complete_words(tokens: Sequence[int], n: int, starts_word: Callable[[int], bool]) -> int:
    """The longest prefix of tokens[:n] that ends with a whole word: a word is whole once the
    token after it, also within tokens[:n], starts a new word."""
    for i in range(n - 1, 0, -1):
        if starts_word(tokens[i]):
            return i
    return 0


def local_agreement(previous: Sequence[int], current: Sequence[int], starts_word: Callable[[int], bool]) -> int:
    """How many leading tokens of `current` to commit: the words two consecutive hypotheses
    agree on (LocalAgreement-2), whole words only."""
    return complete_words(current, common_prefix(previous, current), starts_word)


def rollback(tokens: Sequence[int], keep_provisional: int, starts_word: Callable[[int], bool]) -> int:
    """How many leading tokens to commit when the last `keep_provisional` stay open (the official
    Qwen3-ASR streaming policy), whole words only."""
    # a word just before the provisional tail is whole when the tail's first token starts a new one
    return complete_words(tokens, min(len(tokens), max(0, len(tokens) - keep_provisional) + 1), starts_word)
