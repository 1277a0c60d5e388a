"""Commit policies over successive hypotheses of the same growing audio (pure functions)."""

from __future__ import annotations

from typing import Callable, Sequence


class WordStarts:
    """Which token ids begin a word: a leading space, or a character of a script written without
    spaces (every such character is a word), or one of `also` (markers after which text starts).
    Each id's text is decoded once and cached (`piece`)."""

    def __init__(self, tokenizer, also: tuple[int, ...] = ()):
        self.tokenizer, self.also = tokenizer, set(also)
        self._pieces: dict[int, str] = {}

    def piece(self, token: int) -> str:
        """The text of one token id on its own."""
        text = self._pieces.get(token)
        if text is None:
            text = self._pieces[token] = self.tokenizer.decode([token])
        return text

    def __call__(self, token: int) -> bool:
        first = self.piece(token)[:1]
        return first == " " or (first.isalpha() and not first.isascii()) or token in self.also

    def spelling(self, tokens: Sequence[int]) -> str:
        """What a word says, for comparing two hypotheses: its letters and digits in lower case,
        so that "Hills." and "hills," or ", our" and " our" are the same word."""
        return "".join(c for c in self.tokenizer.decode(list(tokens)).lower() if c.isalnum())


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


def words(tokens: Sequence[int], starts_word: Callable[[int], bool],
          spelling: Callable[[Sequence[int]], str]) -> list[tuple[int, int, str]]:
    """(first token, end token, spelling) of each word of `tokens`; a piece that spells nothing
    (punctuation after a space, or before the first word) joins the word before it (or the one
    after it)."""
    bounds = [i for i in range(len(tokens)) if i == 0 or starts_word(tokens[i])] + [len(tokens)]
    out: list[list] = []
    for a, b in zip(bounds, bounds[1:]):
        key = spelling(tokens[a:b])
        if not key and out:
            out[-1][1] = b                       # punctuation: part of the word before it
        elif out and not out[-1][2]:
            out[-1][1:] = [b, key]               # the words so far spelled nothing: this one takes them
        else:
            out.append([a, b, key])
    return [tuple(w) for w in out]


def _agreed(pw: list[tuple[int, int, str]], cw: list[tuple[int, int, str]]) -> int:
    """How many leading words two word lists spell the same."""
    k = 0
    while k < min(len(pw), len(cw)) and pw[k][2] and pw[k][2] == cw[k][2]:
        k += 1
    return k


def agreement(previous: Sequence[int], current: Sequence[int], starts_word: Callable[[int], bool],
              spelling: Callable[[Sequence[int]], str] | None = None) -> tuple[int, int]:
    """(commit, agreed): how many leading tokens of `current` to commit, being the words two
    consecutive hypotheses agree on (LocalAgreement-2), whole words only; and how many leading
    tokens of `current` are words that `previous` says too, whole or not.

    Without `spelling`, tokens agree, and a word is whole once the first token of the next one
    agrees too. With it, words spelled the same agree (case and punctuation aside), and the last
    of them is whole once both hypotheses go on past it."""
    if spelling is None:
        same = common_prefix(previous, current)
        return complete_words(current, same, starts_word), same
    pw, cw = words(previous, starts_word, spelling), words(current, starts_word, spelling)
    k = _agreed(pw, cw)
    agreed = cw[k - 1][1] if k else 0
    if k and k < len(pw) and k < len(cw):
        return agreed, agreed
    return (cw[k - 2][1] if k >= 2 else 0), agreed


def spelled_through(tokens: Sequence[int], letters: int, spelling: Callable[[Sequence[int]], str]) -> int:
    """The fewest leading tokens whose spelling holds `letters` letters (all of them if it never
    does). A longer prefix never spells fewer letters, so this bisects: O(log n) decodes."""
    lo, hi = 0, len(tokens)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(spelling(tokens[:mid])) >= letters:
            hi = mid
        else:
            lo = mid + 1
    return lo


def confident_words(tokens: Sequence[int], probs: Sequence[float], ends: Sequence[float], start: int,
                    starts_word: Callable[[int], bool], min_prob: float, before: float) -> int:
    """How many leading tokens of `tokens` to commit on one hypothesis alone, going on from
    `start` word by word: a word goes once the decoder chose every one of its tokens with at least
    `min_prob`, it is whole (the next word starts in `tokens`) and it ended (`ends`, per token) no
    later than `before`. The first word that falls short stops it."""
    n = start
    while n < len(tokens):
        end = n + 1
        while end < len(tokens) and not starts_word(tokens[end]):
            end += 1
        if end == len(tokens) or min(probs[n:end]) < min_prob or ends[end - 1] > before:
            break
        n = end
    return n


def rollback(tokens: Sequence[int], keep_provisional: int, starts_word: Callable[[int], bool]) -> int:
    """How many leading tokens to commit when the last `keep_provisional` stay open (the official
    Qwen3-ASR streaming policy), whole words only."""
    # a word just before the provisional tail is whole when the tail's first token starts a new one
    return complete_words(tokens, min(len(tokens), max(0, len(tokens) - keep_provisional) + 1), starts_word)


LOOP_WORDS = 4   # a phrase of this many words or more said twice in a row is a decoder loop


def restated(said: Sequence[int], tokens: Sequence[int], starts_word: Callable[[int], bool],
             spelling: Callable[[Sequence[int]], str], min_words: int = LOOP_WORDS) -> int:
    """How many leading tokens of `tokens` say again the last words of `said`: the longest tail of
    `said`, of `min_words` words or more, that `tokens` begins with word for word (by spelling);
    0 if none."""
    sw, tw = words(said, starts_word, spelling), words(tokens, starts_word, spelling)
    for k in range(min(len(sw), len(tw)), min_words - 1, -1):
        if all(a[2] and a[2] == b[2] for a, b in zip(sw[-k:], tw[:k])):
            return tw[k - 1][1]
    return 0


def before_loop(previous: Sequence[int], tokens: Sequence[int], n: int, starts_word: Callable[[int], bool],
                min_words: int = LOOP_WORDS) -> int:
    """How many of tokens[:n] to commit so that no phrase of `min_words` words or more is repeated
    right after itself with its repeat starting in them: n, or where the first such repeat starts.
    Whisper can loop on a buffer ("... we spend more. I think we should wait until the product is
    tabled before we spend more. I think we should ...") and two hypotheses then agree on the loop.
    `previous`: the tokens committed before these (the first copy may lie there)."""
    previous = list(previous)[-n:] if n else []   # a repeat starting in tokens[:n] is no longer than them
    seq = previous + list(tokens[:n])
    first_new = len(previous)
    bounds = [i for i in range(len(seq)) if i == 0 or starts_word(seq[i])] + [len(seq)]
    words = [tuple(seq[a:b]) for a, b in zip(bounds, bounds[1:])]
    for w in range(1, len(words)):
        if bounds[w] < first_new:
            continue
        for k in range(min_words, min(w, len(words) - w) + 1):
            if words[w - k:w] == words[w:w + k]:
                return bounds[w] - first_new
    return n
