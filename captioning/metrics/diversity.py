"""Corpus statistics of generated captions: vocabulary, length, distinct-n, bad endings.

Captions are whitespace-tokenised (model output is lowercase words joined by spaces).
"""
from __future__ import annotations

from collections.abc import Sequence

from captioning.models.text import TEXT_BAD_ENDINGS

# Words that make a caption look cut off when they end it (the original's decode list, §3).
BAD_ENDINGS = TEXT_BAD_ENDINGS


def ends_badly(caption: str) -> bool:
    """True when the caption's last word is in `BAD_ENDINGS` (an empty caption does not)."""
    words = caption.split()
    return bool(words) and words[-1] in BAD_ENDINGS


def bad_count_rate(captions: Sequence[str]) -> float:
    """Fraction of captions whose last word is a bad ending (the original's ``bad_count_rate``)."""
    if not captions:
        raise ValueError("bad_count_rate needs at least one caption")
    return sum(ends_badly(c) for c in captions) / len(captions)


def distinct_n(captions: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the corpus (n-grams do not cross captions); 0 if none."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for caption in captions:
        words = caption.split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 0.0


def diversity_stats(captions: Sequence[str]) -> dict[str, float]:
    """Vocabulary size, mean length (words), distinct-1/2 and bad-ending rate of a caption corpus."""
    if not captions:
        raise ValueError("diversity_stats needs at least one caption")
    tokenised = [c.split() for c in captions]
    return {
        "vocab_size": float(len({w for words in tokenised for w in words})),
        "mean_length": sum(len(words) for words in tokenised) / len(captions),
        "distinct_1": distinct_n(captions, 1),
        "distinct_2": distinct_n(captions, 2),
        "bad_count_rate": bad_count_rate(captions),
    }
