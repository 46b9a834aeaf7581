"""The CIDEr-D df pickle of ``prepro_ngrams``: {'document_frequency': {ngram tuple: df}, 'ref_len': #images}."""
from __future__ import annotations

import os
import pickle
from collections.abc import Mapping

from cider.ngrams import Ngram


class DFFileError(ValueError):
    """A df pickle that cannot be read or does not hold document frequencies."""


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
        raise DFFileError(f"{path}: unreadable n-gram pickle ({type(e).__name__}: {e}); write it again with "
                         "scripts/prepro_ngrams.py") from None
    if not isinstance(data, Mapping) or not {"document_frequency", "ref_len"} <= set(data):
        raise DFFileError(f"{path}: expected a dict with 'document_frequency' and 'ref_len'")
    return data
