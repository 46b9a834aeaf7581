"""The CIDEr-D df pickle of ``prepro_ngrams``: {'document_frequency': {ngram tuple: df}, 'ref_len': #images}."""
from __future__ import annotations

import os
import pickle
from collections.abc import Mapping

from captioning.cli import InputError
from captioning.utils.io import write_pickle
from cider.ngrams import Ngram


def save_df(path: str | os.PathLike, document_frequency: Mapping[Ngram, float], ref_len: int) -> None:
    """Write the df pickle atomically with protocol 2, readable by the original code."""
    write_pickle(path, {"document_frequency": dict(document_frequency), "ref_len": ref_len}, protocol=2)


def load_df(path: str | os.PathLike) -> tuple[dict[Ngram, float], float]:
    """Read a df pickle (ours or the original's, Python 2 ones included); returns (document_frequency, ref_len)."""
    data = read_df_file(path)
    return data["document_frequency"], data["ref_len"]


def read_df_file(path: str | os.PathLike) -> Mapping:
    """The whole df pickle (extra keys such as ``kind`` and ``vocab_fingerprint`` included)."""
    try:
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError) as e:
        raise InputError(f"{path}: unreadable n-gram pickle ({type(e).__name__}: {e}); write it again with "
                         "scripts/prepro_ngrams.py") from None
    if not isinstance(data, Mapping) or not {"document_frequency", "ref_len"} <= set(data):
        raise InputError(f"{path}: expected a dict with 'document_frequency' and 'ref_len'")
    return data
