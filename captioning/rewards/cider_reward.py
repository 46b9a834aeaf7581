"""CIDEr-D and BLEU-4 rewards on index strings (docs/ORIGINAL.md §4.5, §10 item 9).

Candidates and references are the strings of vocabulary indices of ``cider.index_strings``:
a sample is its ids up to and including the first 0 (``"12 45 7 0"``), a reference is one of
the image's label rows (<= 16 words, UNK kept as its index). CIDEr-D uses the fixed document
frequencies of ``prepro_ngrams`` (``data/<cached_tokens>.p``), so a score does not depend on
the batch. The scorer indexes the df table once, at construction.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from pycocoevalcap.bleu.bleu import Bleu

from captioning.data.fingerprint import check_df
from cider import CiderD, index_strings
from cider.df_file import read_df_file


def cider_df_path(cached_tokens: str, data_dir: str | os.PathLike = "data") -> Path:
    """The df pickle of ``cached_tokens``: ``<data_dir>/<cached_tokens>.p`` as the original, or
    ``cached_tokens`` itself when it names a ``.p`` file (any folder). Missing is an error."""
    given = Path(cached_tokens)
    path = given if given.suffix == ".p" else Path(data_dir) / f"{cached_tokens}.p"
    if not path.is_file():
        raise FileNotFoundError(
            f"CIDEr-D document frequencies not found: {path} (config key cached_tokens={cached_tokens!r}); "
            "write them with scripts/prepro_ngrams.py --split train (the '-idxs.p' file)")
    return path


def reference_strings(gts: Sequence[np.ndarray]) -> list[list[str]]:
    """Index strings of each image's label rows ((n_i, L) arrays)."""
    refs = []
    for m, rows in enumerate(gts):
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[0] == 0:
            raise ValueError(f"image #{m} has no reference label rows (got shape {rows.shape}); "
                             "self-critical rewards need input_label_h5")
        refs.append(index_strings(rows))
    return refs


class CiderReward:
    """CIDEr-D (n = 4, sigma = 6) of token rows against label rows, scored by ``cider.CiderD``."""

    def __init__(self, df: str | os.PathLike | Mapping, vocab: Mapping[str, str] | None = None):
        """``df``: a df pickle path or its dict; with ``vocab`` (ix_to_word) the pickle must have been made
        from it (its recorded fingerprint), and it must hold index n-grams, not words."""
        if not isinstance(df, Mapping):
            path = str(df)
            df = read_df_file(path)
            check_df(path, df, vocab)
        self.scorer = CiderD(df=df)

    def __call__(self, seq: torch.Tensor | np.ndarray, gts: Sequence[np.ndarray],
                 image_index: Sequence[int] | np.ndarray) -> np.ndarray:
        """CIDEr-D of each row of ``seq`` (R, L) against the label rows ``gts[image_index[r]]``."""
        return self.scorer.score(index_strings(seq), reference_strings(gts), image_index)


def bleu4_reward(seq: torch.Tensor | np.ndarray, gts: Sequence[np.ndarray],
                 image_index: Sequence[int] | np.ndarray) -> np.ndarray:
    """Per-row BLEU-4 (pycocoevalcap) on the same index strings, as the original's BLEU term."""
    candidates, refs = index_strings(seq), reference_strings(gts)
    image_index = np.asarray(image_index).reshape(-1)
    if len(image_index) != len(candidates):
        raise ValueError(f"image_index has {len(image_index)} entries for {len(candidates)} rows")
    res = {r: [c] for r, c in enumerate(candidates)}
    ref_map = {r: refs[m] for r, m in enumerate(image_index.tolist())}
    _, scores = Bleu(4).compute_score(ref_map, res, verbose=0)
    return np.asarray(scores[3], dtype=np.float64)
