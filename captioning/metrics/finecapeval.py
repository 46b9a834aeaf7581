"""FineCapEval fine-grained scores (background, object, relation), as ``tools/eval_finecapeval.py``.

The CSV has columns ``image`` (file name), ``caption``, ``background``, ``object``, ``relation``;
the last three hold phrases separated by the two characters backslash-semicolon. Rows with an
empty field are skipped (the original skipped pandas NaN cells; pandas would also have read
literal ``NA``/``nan``/``null`` cells as missing, which are kept here); an image's phrases
accumulate over its rows, and its key is the file name up to the first ``.``.

Faithful rule, per criterion: each ground-truth phrase (lowercased, split on the separator,
pieces of length <= 1 dropped) is tokenised, Porter-stemmed token by token, stripped of
non-alphanumeric characters and re-joined. For every phrase, the share of its words found as a
*raw substring* of the unprocessed generated caption; the image score is the mean over its
phrases (0 without phrases; a phrase left with no words counts as 0); the criterion is the mean
over images x 100. ``overall`` is the mean of the three criteria (not computed by the original).
The ``*_token`` variant instead matches whole words of the caption processed the same way, so
``a`` no longer hits ``cat`` and the stem ``happi`` hits ``happy``.

Tokenisation: the original used ``nltk.word_tokenize``, which needs the downloaded ``punkt`` model
to split sentences before its Treebank word tokenizer. Here the same word tokenizer
(``NLTKWordTokenizer``, no data needed) runs on pseudo-sentences cut after a period that ends an
alphabetic word of two or more letters and is followed by whitespace (``"two dogs. a cat"``),
which is how punkt treats non-abbreviations. It can differ from punkt only for periods inside a
phrase after abbreviations punkt knows but the small list here does not (or the reverse); phrases
without an inner period are tokenised identically.
"""
from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nltk.stem.porter import PorterStemmer
from nltk.tokenize.destructive import NLTKWordTokenizer

from captioning.utils.io import write_json

CRITERIA = ("background", "object", "relation")
COLUMNS = ("image", "caption") + CRITERIA
PHRASE_SEP = "\\;"  # the literal two characters \ and ;

_WORD_TOKENIZER = NLTKWordTokenizer()
_STEMMER = PorterStemmer()
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "mt", "inc", "co", "ltd"})
_WORD_PERIOD = re.compile(r"(\S+)\.(?=\s)")
_NON_ALNUM = re.compile(r"[^a-zA-Z0-9]")


def _pseudo_sentences(text: str) -> list[str]:
    pieces, start = [], 0
    for m in _WORD_PERIOD.finditer(text):
        word = m.group(1)
        if word.isalpha() and len(word) > 1 and word.lower() not in _ABBREVIATIONS:
            pieces.append(text[start : m.end()])
            start = m.end()
    pieces.append(text[start:])
    return pieces


def tokenize(text: str) -> list[str]:
    """Word tokens of ``text`` as ``nltk.word_tokenize`` gives them, without punkt data (see module doc)."""
    return [tok for piece in _pseudo_sentences(text) for tok in _WORD_TOKENIZER.tokenize(piece)]


def process_text(text: str) -> str:
    """Tokenise, Porter-stem each token, strip non-alphanumerics per token, re-join with spaces."""
    return " ".join(_NON_ALNUM.sub("", _STEMMER.stem(tok)) for tok in tokenize(text))


def split_phrases(cell: str) -> list[str]:
    """Processed phrases of one CSV cell: lowercase, split on ``\\;``, keep pieces longer than 1."""
    return [process_text(piece) for piece in cell.lower().split(PHRASE_SEP) if len(piece) > 1]


@dataclass
class FineCapEvalData:
    """Ground truth per image key: raw captions and processed phrases per criterion."""

    captions: dict[str, list[str]] = field(default_factory=dict)
    phrases: dict[str, dict[str, list[str]]] = field(default_factory=lambda: {c: {} for c in CRITERIA})
    n_rows: int = 0
    n_skipped: int = 0


def load_finecapeval(path: str | os.PathLike) -> FineCapEvalData:
    """Read the FineCapEval CSV (any number of rows); rows with an empty field are skipped."""
    data = FineCapEvalData()
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; found {reader.fieldnames}")
        for row in reader:
            data.n_rows += 1
            if any(not (row.get(c) or "").strip() for c in COLUMNS):
                data.n_skipped += 1
                continue
            key = row["image"].split(".")[0]
            data.captions.setdefault(key, []).append(row["caption"])
            for criterion in CRITERIA:
                data.phrases[criterion].setdefault(key, []).extend(split_phrases(row[criterion]))
    if not data.captions:
        raise ValueError(f"{path}: no complete rows")
    return data


def _image_score(phrases: list[str], hit: Callable[[str], bool]) -> float:
    if not phrases:
        return 0.0
    total = 0.0
    for phrase in phrases:
        words = phrase.split()
        if words:
            total += sum(hit(w) for w in words) / len(words)
    return total / len(phrases)


def criterion_score(
    phrases_by_image: dict[str, list[str]], predictions: dict[str, str], token_level: bool = False
) -> float:
    """Mean over images of the phrase-word hit rate, x 100 (substring rule unless ``token_level``)."""
    scores = []
    for key, phrases in phrases_by_image.items():
        caption = predictions[key]
        if token_level:
            tokens = set(process_text(caption.lower()).split())
            scores.append(_image_score(phrases, tokens.__contains__))
        else:
            scores.append(_image_score(phrases, lambda w: w in caption))
    return 100.0 * sum(scores) / len(scores)


def score_finecapeval(data: FineCapEvalData, predictions: dict[str, str]) -> dict[str, float]:
    """Per-criterion scores, their mean ``overall``, and the token-level ``*_token`` variants."""
    missing = [k for k in data.captions if k not in predictions]
    if missing:
        raise ValueError(f"no generated caption for {len(missing)} FineCapEval image(s), e.g. {missing[:5]}")
    out: dict[str, float] = {}
    for suffix, token_level in (("", False), ("_token", True)):
        for criterion in CRITERIA:
            out[criterion + suffix] = criterion_score(data.phrases[criterion], predictions, token_level)
        out["overall" + suffix] = sum(out[c + suffix] for c in CRITERIA) / len(CRITERIA)
    out["n_images"] = float(len(data.captions))
    return out


def write_finecapeval_json(result: dict, path: str | os.PathLike) -> Path:
    """Write scores as JSON atomically, creating the folder."""
    write_json(path, result, indent=2)
    return Path(path)
