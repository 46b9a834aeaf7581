"""The CIDEr-D df pickle of ``prepro_ngrams``: {'document_frequency': {ngram tuple: df}, 'ref_len': #images}."""
from __future__ import annotations

import os
import pickle
from collections.abc import Mapping

from captioning.utils.io import write_pickle
from cider.ngrams import Ngram


def save_df(path: str | os.PathLike, document_frequency: Mapping[Ngram, float], ref_len: int) -> None:
    """Write the df pickle atomically with protocol 2, readable by the original code."""
    write_pickle(path, {"document_frequency": dict(document_frequency), "ref_len": ref_len}, protocol=2)


def load_df(path: str | os.PathLike) -> tuple[dict[Ngram, float], float]:
    """Read a df pickle (ours or the original's, Python 2 ones included); returns (document_frequency, ref_len)."""
    with open(path, "rb") as f:
        data = pickle.load(f, encoding="latin1")
    if not isinstance(data, Mapping) or not {"document_frequency", "ref_len"} <= set(data):
        raise ValueError(f"{path}: expected a dict with 'document_frequency' and 'ref_len'")
    return data["document_frequency"], data["ref_len"]
