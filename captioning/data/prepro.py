"""Caption preprocessing, faithful to the original (docs/ORIGINAL.md §1.2-1.3).

* :func:`build_vocab` / :func:`encode_captions` / :func:`prepro_labels`: Karpathy JSON ->
  ``cocotalk.json`` (``ix_to_word``, ``images``) + ``<prefix>_label.h5`` (``labels``,
  ``label_start_ix``, ``label_end_ix``, ``label_length``, all uint32).
* :func:`ngram_corpora` / :func:`prepro_ngrams`: document frequencies of the references of one
  split, as word strings and as vocabulary-index strings, for CIDEr-D.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image

from cider import document_frequency
from captioning.data.karpathy import image_id
from captioning.cli import InputError
from captioning.data.fingerprint import FINGERPRINT_KEY, vocab_fingerprint
from captioning.utils.io import atomic_path, read_json, write_json, write_pickle

UNK = "UNK"
EOS = "<eos>"


class DataError(InputError):
    """The input data set is malformed."""


def load_karpathy(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The ``images`` list of a Karpathy-format JSON, with its required fields checked."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"input JSON not found: {path}")
    data = read_json(path)
    if not isinstance(data, dict) or "images" not in data:
        raise DataError(f"{path}: expected a Karpathy-format JSON with a top-level 'images' list")
    images = data["images"]
    for i, img in enumerate(images):
        missing = [k for k in ("split", "filename", "sentences") if k not in img]
        if "cocoid" not in img and "imgid" not in img:
            missing.append("cocoid (or imgid)")
        if missing:
            raise DataError(f"{path}: image #{i} ({img.get('filename', '?')}) lacks field(s) {', '.join(missing)}")
        if not img["sentences"]:
            raise DataError(f"{path}: image #{i} (id {image_id(img)}, {img['filename']}) has no captions")
        for j, sent in enumerate(img["sentences"]):
            if "tokens" not in sent:
                raise DataError(f"{path}: image #{i} (id {image_id(img)}) caption #{j} lacks 'tokens'")
            if not sent["tokens"]:
                raise DataError(f"{path}: image #{i} (id {image_id(img)}) caption #{j} is empty "
                                f"(raw: {sent.get('raw', '')!r})")
    return images


def build_vocab(images: list[dict[str, Any]], count_threshold: int = 5) -> list[str]:
    """Words seen more than ``count_threshold`` times over all splits, in first-occurrence order.

    ``UNK`` is appended last when any word was dropped.
    """
    counts: dict[str, int] = {}
    for img in images:
        for sent in img["sentences"]:
            for w in sent["tokens"]:
                counts[w] = counts.get(w, 0) + 1
    vocab = [w for w, n in counts.items() if n > count_threshold]
    if len(vocab) < len(counts):
        if UNK in vocab:
            raise DataError(f"the captions contain the word {UNK!r}, which is reserved for unknown words")
        vocab.append(UNK)
    return vocab


def encode_captions(images: list[dict[str, Any]], wtoi: dict[str, int], max_length: int = 16) -> dict[str, np.ndarray]:
    """The label arrays: captions truncated to ``max_length``, zero-padded, in image then caption order."""
    n_caps = sum(len(img["sentences"]) for img in images)
    labels = np.zeros((n_caps, max_length), dtype=np.uint32)
    start = np.zeros(len(images), dtype=np.uint32)
    end = np.zeros(len(images), dtype=np.uint32)
    length = np.zeros(n_caps, dtype=np.uint32)
    unk = wtoi.get(UNK)
    row = 0
    for i, img in enumerate(images):
        start[i] = row + 1
        for sent in img["sentences"]:
            tokens = sent["tokens"][:max_length]
            labels[row, : len(tokens)] = [wtoi[w] if w in wtoi else unk for w in tokens]
            length[row] = len(tokens)
            row += 1
        end[i] = row
    return {"labels": labels, "label_start_ix": start, "label_end_ix": end, "label_length": length}


def prepro_labels(
    input_json: str | os.PathLike,
    output_json: str | os.PathLike,
    output_h5: str | os.PathLike,
    images_root: str = "",
    max_length: int = 16,
    word_count_threshold: int = 5,
) -> dict[str, Any]:
    """Run the whole label preprocessing; writes ``output_json`` and ``<output_h5>_label.h5``.

    Both also record the vocabulary fingerprint and ``max_length`` (an extra JSON key and HDF5
    attributes: the original's readers ignore them) so that the data module can bind them.
    """
    if max_length < 1:
        raise DataError(f"--max_length must be >= 1 (captions are truncated to it), got {max_length}")
    if word_count_threshold < 0:
        raise DataError(f"--word_count_threshold must be >= 0, got {word_count_threshold}")
    images = load_karpathy(input_json)
    for out in (Path(output_json), Path(f"{output_h5}_label.h5")):  # fail before any work on an unwritable path
        out.parent.mkdir(parents=True, exist_ok=True)
    vocab = build_vocab(images, word_count_threshold)
    wtoi = {w: i + 1 for i, w in enumerate(vocab)}
    ix_to_word = {str(i + 1): w for i, w in enumerate(vocab)}
    binding = {FINGERPRINT_KEY: vocab_fingerprint(ix_to_word), "max_length": max_length,
               "word_count_threshold": word_count_threshold}
    arrays = encode_captions(images, wtoi, max_length)
    out_images = []
    for img in images:
        entry = {"split": img["split"], "file_path": os.path.join(img.get("filepath", ""), img["filename"]),
                 "id": image_id(img)}
        if images_root:
            with Image.open(os.path.join(images_root, entry["file_path"])) as im:
                entry["width"], entry["height"] = im.size
        out_images.append(entry)
    with atomic_path(f"{output_h5}_label.h5") as tmp:
        with h5py.File(tmp, "w") as f:
            for name, arr in arrays.items():
                f.create_dataset(name, data=arr)
            f.attrs.update(binding)
    info = {"ix_to_word": ix_to_word, "images": out_images, **binding}
    write_json(output_json, info)
    return {"vocab_size": len(vocab), "n_images": len(images), "n_captions": int(arrays["labels"].shape[0]),
            "n_unk_words": int(UNK in wtoi)}


def split_matches(image_split: str, wanted: str) -> bool:
    """Split selection of ``prepro_ngrams``: ``train`` also takes ``restval``; ``all`` takes everything."""
    return wanted == "all" or image_split == wanted or (wanted == "train" and image_split == "restval")


def ngram_corpora(images: Iterable[dict[str, Any]], wtoi: dict[str, int], split: str) -> tuple[list[list[str]], list[list[str]]]:
    """Per selected image, its references as word strings and as index strings, each ending in EOS.

    Words outside the vocabulary become ``UNK``; there is no truncation. EOS is ``<eos>`` in
    word strings and ``0`` in index strings.
    """
    words_corpus, idxs_corpus = [], []
    for img in images:
        if not split_matches(img["split"], split):
            continue
        words_refs, idx_refs = [], []
        for sent in img["sentences"]:
            unknown = [w for w in sent["tokens"] if w not in wtoi]
            if unknown and UNK not in wtoi:
                raise DataError(f"image {image_id(img)}: words {unknown} are not in the vocabulary, which has no "
                                f"{UNK!r} entry; was the vocabulary built from this data set?")
            tokens = [w if w in wtoi else UNK for w in sent["tokens"]]
            words_refs.append(" ".join(tokens + [EOS]))
            idx_refs.append(" ".join([str(wtoi[w]) for w in tokens] + ["0"]))
        words_corpus.append(words_refs)
        idxs_corpus.append(idx_refs)
    if not words_corpus:
        raise DataError(f"no image belongs to split {split!r}")
    return words_corpus, idxs_corpus


def prepro_ngrams(input_json: str | os.PathLike, dict_json: str | os.PathLike, output_pkl: str, split: str) -> int:
    """Write ``<output_pkl>-words.p`` and ``<output_pkl>-idxs.p``; returns the number of images."""
    if split not in ("train", "val", "test", "all"):
        raise DataError(f"--split must be one of train, val, test, all; got {split!r}")
    images = load_karpathy(input_json)
    info = read_json(dict_json)
    ix_to_word = info.get("ix_to_word") if isinstance(info, dict) else None
    if not isinstance(ix_to_word, dict) or not ix_to_word:
        raise DataError(f"{dict_json} has no 'ix_to_word' vocabulary; give the JSON of scripts/prepro_labels.py")
    check_vocab_of(images, info, input_json, dict_json)
    wtoi = {w: int(i) for i, w in ix_to_word.items()}
    words_corpus, idxs_corpus = ngram_corpora(images, wtoi, split)
    written = []
    for suffix, corpus in (("words", words_corpus), ("idxs", idxs_corpus)):
        df, ref_len = document_frequency(corpus)
        written.append((f"{output_pkl}-{suffix}.p", {"document_frequency": {k: float(v) for k, v in df.items()},
                                                    "ref_len": ref_len, "kind": suffix,
                                                    FINGERPRINT_KEY: vocab_fingerprint(ix_to_word)}))
    for path, obj in written:
        write_pickle(path, obj)
    return len(words_corpus)


def write_df(path: str | os.PathLike, document_frequency: dict, ref_len: float) -> None:
    """A bare df pickle (no kind or fingerprint: what the original's files hold), e.g. for tests and benchmarks."""
    write_pickle(path, {"document_frequency": dict(document_frequency), "ref_len": ref_len})


def check_vocab_of(images: list[dict[str, Any]], info: dict[str, Any], input_json: str | os.PathLike,
                   dict_json: str | os.PathLike) -> None:
    """Refuse a vocabulary that was not built from ``images``: with a recorded ``word_count_threshold``
    it must be exactly the one prepro_labels builds; without, every word must occur in the captions."""
    ix_to_word = info["ix_to_word"]
    threshold = info.get("word_count_threshold")
    if isinstance(threshold, int) and not isinstance(threshold, bool):
        expected = {str(i + 1): w for i, w in enumerate(build_vocab(images, threshold))}
        if vocab_fingerprint(expected) != vocab_fingerprint(ix_to_word):
            raise DataError(f"{dict_json} holds another vocabulary than prepro_labels builds from {input_json} "
                            f"(word_count_threshold {threshold}); give the --dict_json made from this --input_json")
        return
    seen = {w for img in images for sent in img["sentences"] for w in sent["tokens"]}
    foreign = [w for w in ix_to_word.values() if w not in seen and w != UNK]
    if foreign:
        raise DataError(f"{dict_json} has {len(foreign)} word(s) that never occur in {input_json}, e.g. "
                        f"{foreign[:5]}; give the --dict_json made from this --input_json")


def read_vocab(input_json: str) -> dict[str, str]:
    """``ix_to_word`` of a prepro_labels JSON."""
    info = read_json(input_json)
    vocab = info.get("ix_to_word") if isinstance(info, dict) else None
    if not vocab:
        raise InputError(f"{input_json} has no ix_to_word vocabulary (run scripts/prepro_labels.py)")
    return vocab
