"""N-gram counting and document frequencies shared by CIDEr, CIDEr-D and `prepro_ngrams`.

Captions are whitespace-separated strings: words (``"a red circle"``) or vocabulary-index
strings as used by the SCST reward (``"12 845 3 0"``). Both are treated alike.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

Ngram = tuple[str, ...]


def ngram_counts(caption: str, n: int = 4) -> Counter[Ngram]:
    """Count every k-gram (1 <= k <= n) of a whitespace-tokenised caption, as coco-caption's ``precook``."""
    words = caption.split()
    counts: Counter[Ngram] = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


def document_frequency(refs_per_image: Iterable[Sequence[str]], n: int = 4) -> tuple[dict[Ngram, int], int]:
    """Number of images whose reference set contains each n-gram, and the number of images.

    ``refs_per_image`` yields, for each image, its reference captions. The result is the
    ``(document_frequency, ref_len)`` pair that coco-caption computes in corpus mode and that
    the original ``prepro_ngrams.py`` pickles (``ref_len`` is the image count, not its log).
    """
    df: Counter[Ngram] = Counter()
    n_images = 0
    for refs in refs_per_image:
        seen: set[Ngram] = set()
        for ref in refs:
            words = ref.split()
            for k in range(1, n + 1):
                seen.update(zip(*(words[i:] for i in range(k))))
        df.update(seen)
        n_images += 1
    return dict(df), n_images
