"""Binding artefacts that belong together: a vocabulary fingerprint recorded by the prepro scripts
and checked by the data module and the CIDEr-D reward.

``prepro_labels`` writes the fingerprint (and ``max_length``) as extra keys of its JSON and as
attributes of its HDF5 file; ``prepro_ngrams`` as extra keys of its pickles, with ``kind``
(``words`` or ``idxs``). The original's readers ignore the extra keys. Files without a
fingerprint (e.g. the original's) are accepted with a one-line notice; their label indices are
still range-checked against the vocabulary.
"""
from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from captioning.cli import InputError

FINGERPRINT_KEY = "vocab_fingerprint"


class BindingError(InputError):
    """Two artefacts were made from different vocabularies (or are of the wrong kind)."""


def vocab_fingerprint(ix_to_word: Mapping[str, str]) -> str:
    """A short hash of the vocabulary (its words in index order)."""
    words = [ix_to_word[k] for k in sorted(ix_to_word, key=int)]
    return hashlib.sha256(json.dumps(words, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def notice(message: str) -> None:
    """A one-line notice on stderr (not an error)."""
    print(f"notice: {message}", file=sys.stderr)


def check_labels(json_path: str, ix_to_word: Mapping[str, str], h5_path: str, h5_attrs: Mapping[str, Any],
                 labels: np.ndarray) -> None:
    """Refuse a label file written with another vocabulary than ``json_path``'s; range-check the indices."""
    recorded = h5_attrs.get(FINGERPRINT_KEY)
    recorded = recorded.decode() if isinstance(recorded, bytes) else recorded
    if recorded is None:
        notice(f"{h5_path} has no vocabulary fingerprint (written by an older prepro_labels); "
               "only its label indices are checked against the vocabulary")
    elif str(recorded) != vocab_fingerprint(ix_to_word):
        raise BindingError(f"{h5_path} was written with another vocabulary than {json_path} (fingerprint "
                           f"{recorded} vs {vocab_fingerprint(ix_to_word)}); use the label file and JSON of the same "
                           "prepro_labels run")
    top = int(labels.max()) if labels.size else 0
    if top > len(ix_to_word):
        raise BindingError(f"{h5_path} holds label index {top} but the vocabulary of {json_path} has only "
                           f"{len(ix_to_word)} words; use the label file and JSON of the same prepro_labels run")
    if labels.ndim != 2 or labels.shape[1] < 1:
        raise BindingError(f"{h5_path}: labels have shape {labels.shape}; re-run prepro_labels with --max_length >= 1")


def df_kind(df: Mapping[str, Any]) -> str:
    """``words`` or ``idxs``: recorded by prepro_ngrams, else inferred from the n-grams themselves."""
    if df.get("kind") in ("words", "idxs"):
        return df["kind"]
    tokens = (t for ngram in df["document_frequency"] for t in ngram)
    return "idxs" if all(str(t).isdigit() for t in tokens) else "words"


def check_df(path: str, df: Mapping[str, Any], ix_to_word: Mapping[str, str] | None) -> None:
    """Refuse a CIDEr-D df pickle of words (the reward scores indices) or of another vocabulary."""
    if df_kind(df) != "idxs":
        raise BindingError(f"{path} holds word n-grams, but the CIDEr-D reward scores vocabulary indices; set "
                           "cached_tokens to the '-idxs' file of scripts/prepro_ngrams.py")
    if ix_to_word is None:
        return
    recorded = df.get(FINGERPRINT_KEY)
    if recorded is None:
        notice(f"{path} has no vocabulary fingerprint (written by an older prepro_ngrams); it is assumed to match "
               "the data's vocabulary")
    elif recorded != vocab_fingerprint(ix_to_word):
        raise BindingError(f"{path} was made with another vocabulary than the data's (fingerprint {recorded} vs "
                           f"{vocab_fingerprint(ix_to_word)}); run scripts/prepro_ngrams.py with this data's "
                           "--dict_json")
