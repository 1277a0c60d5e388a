"""Dynamic batching: inputs grouped by length so padding stays small, batches bounded by a memory
budget as well as a count, and the padding that is left counted.

Families estimate what a batch costs (`bytes_of(count, longest)`: key-value caches, cross-attention
keys, activations); this module only orders and groups. Sequences that finish early leave their
batch in the search layer (qasr_edge.search drops finished groups from the decoder state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass
class PaddingStats:
    """Real and padded units (audio frames, prompt tokens) of the batches run so far."""

    batches: int = 0
    items: int = 0
    real: int = 0
    padded: int = 0

    def add(self, lengths: Sequence[int], padded_to: int | None = None) -> None:
        """One batch whose items have `lengths`, each padded to `padded_to` (default: the longest)."""
        width = max(lengths) if padded_to is None else padded_to
        self.batches += 1
        self.items += len(lengths)
        self.real += sum(lengths)
        self.padded += sum(width - n for n in lengths)

    def merge(self, other: "PaddingStats") -> None:
        self.batches += other.batches
        self.items += other.items
        self.real += other.real
        self.padded += other.padded

    @property
    def padding_fraction(self) -> float:
        total = self.real + self.padded
        return self.padded / total if total else 0.0

    def to_dict(self) -> dict[str, float]:
        return {"batches": self.batches, "items": self.items, "real": self.real, "padded": self.padded,
                "padding_fraction": round(self.padding_fraction, 4)}


def plan_batches(lengths: Sequence[int], max_batch: int, budget_bytes: int,
                 bytes_of: Callable[[int, int], int]) -> list[list[int]]:
    """Indices of `lengths` grouped into batches, longest first.

    A batch takes the longest remaining item and then the next longest while it has fewer than
    `max_batch` items and `bytes_of(count, longest)` stays within `budget_bytes`; an item that
    alone exceeds the budget still runs, alone.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    for i in order:
        current = batches[-1] if batches else None
        if (current is not None and len(current) < max_batch
                and bytes_of(len(current) + 1, lengths[current[0]]) <= budget_bytes):
            current.append(i)
        else:
            batches.append([i])
    return batches


def fit_count(per_item_bytes: int, budget_bytes: int, max_count: int) -> int:
    """How many items of `per_item_bytes` fit in the budget (at least 1, at most `max_count`)."""
    return max(1, min(max_count, budget_bytes // max(per_item_bytes, 1)))
