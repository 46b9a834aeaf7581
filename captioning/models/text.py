"""Index sequences <-> text, and the two "bad ending" word lists of the original."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor

# Words after which decoding may forbid EOS (``remove_bad_endings`` in sampling/beam search).
DECODE_BAD_ENDINGS = ("a", "an", "the", "in", "for", "at", "of", "with", "before", "after", "on", "upon",
                      "near", "to", "is", "are", "am")
# Trailing words stripped from decoded text (``remove_bad_endings`` in ``decode_sequence``).
TEXT_BAD_ENDINGS = ("with", "in", "on", "of", "a", "at", "to", "for", "an", "this", "his", "her", "that", "the")


def bad_ending_ids(ix_to_word: Mapping[str, str], words: Iterable[str] = DECODE_BAD_ENDINGS) -> list[int]:
    """Vocabulary indices of ``words`` (those present), for the decoders' ``bad_ending_ids``."""
    wanted = set(words)
    return sorted(int(ix) for ix, w in ix_to_word.items() if w in wanted)


def strip_bad_endings(text: str, bad_endings: Iterable[str] = TEXT_BAD_ENDINGS) -> str:
    """Drop trailing bad-ending words. As in the original, a caption made *only* of such words is
    kept whole."""
    bad = set(bad_endings)
    words = text.split(" ")
    keep = len(words)
    while keep > 0 and words[keep - 1] in bad:
        keep -= 1
    return text if keep == 0 else " ".join(words[:keep])


def decode_sequence(
    ix_to_word: Mapping[str, str],
    seq: Tensor,
    remove_bad_endings: bool = False,
    bad_endings: Iterable[str] = TEXT_BAD_ENDINGS,
) -> list[str]:
    """Captions from (R, L) token indices: words joined by spaces up to the first 0, optional
    bad-ending stripping, then BPE joints ``'@@ '`` removed."""
    if seq.dim() != 2:
        raise ValueError(f"seq must be (R, L), got shape {tuple(seq.shape)}")
    out = []
    for row in seq.tolist():
        words = []
        for ix in row:
            if ix == 0:
                break
            try:
                words.append(ix_to_word[str(ix)])
            except KeyError:
                raise ValueError(f"token index {ix} is not in ix_to_word") from None
        text = " ".join(words)
        if remove_bad_endings:
            text = strip_bad_endings(text, bad_endings)
        out.append(text.replace("@@ ", ""))
    return out
