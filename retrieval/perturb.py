"""Negative captions for the grammar head: five token-level perturbations (docs/ORIGINAL.md §6.1).

Each function takes a caption's tokens and a :class:`random.Random` and returns new tokens; the
type is drawn uniformly by :func:`perturb`. Compared with the original, three defects are fixed
(docs/ORIGINAL.md §10.15): n-grams are capped at the caption length, so 1- and 2-word captions never
crash; ``insert`` may also append at the end; and a negative never equals its positive (``swap``
changes distinct positions to different words, ``shuffle`` redraws until the order changes and
is only drawn for captions with two different words).

Length changes: ``repeat`` +r*n, ``remove`` -n, ``insert`` +k, ``swap`` 0, ``shuffle`` 0,
with n, r, k in 1..3 (n at most the caption length; k swaps at most the caption length).
"""
from __future__ import annotations

import random
from collections.abc import Sequence

PERTURBATIONS = ("repeat", "remove", "insert", "swap", "shuffle")


def _check(tokens: Sequence[str]) -> list[str]:
    if not tokens:
        raise ValueError("cannot perturb an empty caption")
    return list(tokens)


def repeat(tokens: Sequence[str], rng: random.Random) -> list[str]:
    """Insert r in 1..3 copies of an n-gram (n in 1..3) of the caption, each at a random position."""
    out = _check(tokens)
    n = rng.randint(1, min(3, len(out)))
    start = rng.randint(0, len(out) - n)
    gram = out[start:start + n]
    for _ in range(rng.randint(1, 3)):
        pos = rng.randint(0, len(out))
        out[pos:pos] = gram
    return out


def remove(tokens: Sequence[str], rng: random.Random) -> list[str]:
    """Delete an n-gram, n in 1..min(3, length) (a one-word caption becomes empty)."""
    out = _check(tokens)
    n = rng.randint(1, min(3, len(out)))
    start = rng.randint(0, len(out) - n)
    del out[start:start + n]
    return out


def insert(tokens: Sequence[str], vocab: Sequence[str], rng: random.Random) -> list[str]:
    """Insert k in 1..3 random vocabulary words, each at a position in 0..length (the end included)."""
    out = _check(tokens)
    for _ in range(rng.randint(1, 3)):
        out.insert(rng.randint(0, len(out)), rng.choice(vocab))
    return out


def swap(tokens: Sequence[str], vocab: Sequence[str], rng: random.Random) -> list[str]:
    """Replace the words at k in 1..min(3, length) distinct positions by other vocabulary words."""
    out = _check(tokens)
    if len(set(vocab)) < 2:
        raise ValueError("swap needs a vocabulary of at least two different words")
    for pos in rng.sample(range(len(out)), rng.randint(1, min(3, len(out)))):
        word = rng.choice(vocab)
        while word == out[pos]:
            word = rng.choice(vocab)
        out[pos] = word
    return out


def shuffle(tokens: Sequence[str], rng: random.Random) -> list[str]:
    """A random order of the words that differs from the original one (needs two different words)."""
    original = _check(tokens)
    if len(set(original)) < 2:
        raise ValueError(f"cannot shuffle {original!r} into a different order")
    out = list(original)
    while out == original:
        rng.shuffle(out)
    return out


def applicable(tokens: Sequence[str]) -> tuple[str, ...]:
    """The perturbations that can change this caption (``shuffle`` needs two different words)."""
    return PERTURBATIONS if len(set(tokens)) >= 2 else PERTURBATIONS[:-1]


def perturb(tokens: Sequence[str], vocab: Sequence[str], rng: random.Random,
            kind: str | None = None) -> tuple[list[str], str]:
    """A negative caption and its type; ``kind`` None draws it uniformly from :func:`applicable`."""
    kind = kind or rng.choice(applicable(tokens))
    if kind == "repeat":
        return repeat(tokens, rng), kind
    if kind == "remove":
        return remove(tokens, rng), kind
    if kind == "insert":
        return insert(tokens, vocab, rng), kind
    if kind == "swap":
        return swap(tokens, vocab, rng), kind
    if kind == "shuffle":
        return shuffle(tokens, rng), kind
    raise ValueError(f"unknown perturbation {kind!r}; expected one of {PERTURBATIONS}")


def vocabulary(ix_to_word: dict[str, str]) -> list[str]:
    """The words negatives may insert: ``ix_to_word`` in index order, without ``UNK``."""
    words = [ix_to_word[k] for k in sorted(ix_to_word, key=int)]
    return [w for w in words if w != "UNK"]
