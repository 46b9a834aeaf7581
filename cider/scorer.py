"""CIDEr-D and CIDEr, vectorised, with the numbers of coco-caption / pyciderevalcap.

For candidate c and reference r, per n-gram order k = 1..n, each text is a vector of
tf(g) * (log(ref_len) - log(max(1, df(g)))) over its k-grams g, and

    s_k(c, r) = sum_g f(v_c(g), v_r(g)) * v_r(g) / (|v_c| |v_r|)       (no division if a norm is 0)

with f(a, b) = min(a, b) for CIDEr-D ("clipping") and f(a, b) = a for CIDEr. CIDEr-D also
multiplies by exp(-d^2 / (2 sigma^2)), d = difference of the bigram counts (the word-count
difference for texts of 2+ words; 0 when n = 1). The score is 10 x the mean over references
of the mean over k of s_k.

Document frequencies come either from the references being scored ("corpus": each scored
entry contributes its reference set as one document and ref_len is the number of entries,
as coco-caption and pyciderevalcap do) or from a fixed table (a df file written by
``prepro_ngrams``, ref_len = its image count).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from cider.df_file import load_df
from cider.ngram_index import NgramIndex, sorted_unique

DfSource = str | os.PathLike | Mapping


class _CiderBase:
    clipped: bool
    length_penalty: bool

    def __init__(self, n: int, sigma: float, df: DfSource):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.n, self.sigma = n, float(sigma)
        if isinstance(df, str) and df == "corpus":
            self.index, self.log_ref_len = NgramIndex.empty(n), None
            return
        if isinstance(df, Mapping):
            missing = {"document_frequency", "ref_len"} - set(df)
            if missing:
                raise ValueError(f"df dict lacks {sorted(missing)}; expected 'document_frequency' and 'ref_len'")
            frequencies, ref_len = df["document_frequency"], df["ref_len"]
        else:
            frequencies, ref_len = load_df(df)
        if not ref_len > 0:
            raise ValueError(f"ref_len must be a positive image count, got {ref_len!r}")
        self.index, self.log_ref_len = NgramIndex(frequencies, n), np.log(float(ref_len))

    def compute_score(self, gts: Mapping, res: Sequence[Mapping] | Mapping) -> tuple[float, np.ndarray]:
        """Score ``res`` against ``gts`` = {image_id: [reference strings]}; returns (mean, per-item scores).

        ``res`` is a list of {'image_id': id, 'caption': [one string]} (pyciderevalcap style;
        an image may appear several times) or a dict {image_id: [one string]} (pycocoevalcap
        style). Per-item scores follow the order of ``res``.
        """
        items = res.items() if isinstance(res, Mapping) else (_unpack_entry(e) for e in res)
        row_of: dict = {}
        refs: list[Sequence[str]] = []
        candidates: list[str] = []
        image_index: list[int] = []
        for image_id, caption in items:
            if not isinstance(caption, list) or len(caption) != 1 or not isinstance(caption[0], str):
                raise ValueError(f"caption of image {image_id!r} must be a list of one string, got {caption!r}")
            if image_id not in row_of:
                if image_id not in gts:
                    raise KeyError(f"image {image_id!r} has a candidate but no references in gts")
                row_of[image_id] = len(refs)
                refs.append(_check_refs(gts[image_id], image_id))
            candidates.append(caption[0])
            image_index.append(row_of[image_id])
        if not candidates:
            raise ValueError("res is empty: nothing to score")
        scores = self._score(candidates, refs, np.array(image_index, dtype=np.int64))
        return float(scores.mean()), scores

    def score(
        self,
        candidates: Sequence[str],
        refs: Sequence[Sequence[str]],
        image_index: Sequence[int] | np.ndarray | None = None,
    ) -> np.ndarray:
        """Score each candidate against the references of its image.

        ``refs[m]`` holds the reference strings of image m and candidate i belongs to image
        ``image_index[i]`` (default: candidate i to image i). The n-gram vectors of each
        image's references are computed once, however many candidates share it (e.g. the K
        samples and the greedy caption of SCST).
        """
        n_cand = len(candidates)
        if image_index is None:
            if len(refs) != n_cand:
                raise ValueError(f"{n_cand} candidates but {len(refs)} reference sets; pass image_index")
            image_index = np.arange(n_cand)
        image_index = np.asarray(image_index, dtype=np.int64).reshape(-1)
        if len(image_index) != n_cand:
            raise ValueError(f"image_index has {len(image_index)} entries for {n_cand} candidates")
        if n_cand == 0:
            return np.zeros(0)
        if image_index.min() < 0 or image_index.max() >= len(refs):
            raise IndexError(f"image_index out of range for {len(refs)} reference sets")
        if not all(isinstance(c, str) for c in candidates):
            raise TypeError("candidates must be strings")
        used, cand_image = np.unique(image_index, return_inverse=True)
        return self._score(list(candidates), [_check_refs(refs[m], f"#{m}") for m in used.tolist()], cand_image)

    def _score(self, candidates: list[str], ref_lists: list[Sequence[str]], cand_image: np.ndarray) -> np.ndarray:
        """``score`` on checked inputs: every reference set is used by some candidate."""
        n_cand = len(candidates)
        n_refs = np.array([len(r) for r in ref_lists], dtype=np.int64)
        ref_start = n_cand + np.cumsum(n_refs) - n_refs  # text index of each image's first reference
        texts = candidates + [r for rs in ref_lists for r in rs]
        text, order, gram, tf, lengths = self.index.encode(texts)

        text_image = np.concatenate([cand_image, np.repeat(np.arange(len(ref_lists)), n_refs)])
        if self.log_ref_len is None:  # corpus mode: one document per candidate entry
            log_ref_len = np.log(float(n_cand))
            docs = np.bincount(cand_image, minlength=len(ref_lists))  # entries per image
            is_ref = text >= n_cand
            df = _corpus_df(text_image[text[is_ref]], gram[is_ref], docs, gram)
        else:
            log_ref_len = self.log_ref_len
            df = np.zeros(len(gram))
            in_table = gram < len(self.index.df)
            df[in_table] = self.index.df[gram[in_table]]
        weight = tf * (log_ref_len - np.log(np.maximum(1.0, df)))
        n, n_text = self.n, len(texts)
        norm = np.sqrt(np.bincount(text * n + order, weights=weight * weight, minlength=n_text * n)).reshape(n_text, n)

        c_row, r_row = _match(text, gram, text_image, n_cand)
        v_c, v_r = weight[c_row], weight[r_row]
        product = (np.minimum(v_c, v_r) if self.clipped else v_c) * v_r

        # one slot per (candidate, reference of its image)
        pair_count = n_refs[cand_image]
        pair_base = np.cumsum(pair_count) - pair_count
        c_text, r_text = text[c_row], text[r_row]
        slot = pair_base[c_text] + r_text - ref_start[cand_image[c_text]]
        n_pair = int(pair_count.sum())
        val = np.bincount(slot * n + order[c_row], weights=product, minlength=n_pair * n)
        val = val.astype(np.float64, copy=False).reshape(n_pair, n)  # bincount of nothing is int64
        pair_cand = np.repeat(np.arange(n_cand), pair_count)
        pair_ref = ref_start[cand_image[pair_cand]] + np.arange(n_pair) - pair_base[pair_cand]
        norm_c, norm_r = norm[pair_cand], norm[pair_ref]
        divide = (norm_c != 0) & (norm_r != 0)
        val[divide] /= norm_c[divide] * norm_r[divide]
        if self.length_penalty:
            bigrams = np.maximum(lengths - 1, 0) if n >= 2 else np.zeros_like(lengths)
            delta = (bigrams[pair_cand] - bigrams[pair_ref]).astype(np.float64)
            val *= np.exp(-(delta**2) / (2 * self.sigma**2))[:, None]
        per_pair = val.mean(axis=1)
        return np.bincount(pair_cand, weights=per_pair, minlength=n_cand) / pair_count * 10.0


class CiderD(_CiderBase):
    """CIDEr-D (clipped n-gram matches, Gaussian length penalty), as pyciderevalcap's ``CiderD``."""

    clipped = True
    length_penalty = True

    def __init__(self, n: int = 4, sigma: float = 6.0, df: DfSource = "corpus"):
        super().__init__(n, sigma, df)

    def method(self) -> str:
        return "CIDEr-D"


class Cider(_CiderBase):
    """Plain CIDEr (no clipping, no length penalty), as the vrama91 / ruotianluo ``Cider``."""

    clipped = False
    length_penalty = False

    def __init__(self, n: int = 4, df: DfSource = "corpus"):
        super().__init__(n, 6.0, df)

    def method(self) -> str:
        return "CIDEr"


def _unpack_entry(entry: Mapping) -> tuple:
    if not isinstance(entry, Mapping) or "image_id" not in entry or "caption" not in entry:
        raise ValueError(f"res entries must be {{'image_id': ..., 'caption': [str]}}, got {entry!r}")
    return entry["image_id"], entry["caption"]


def _check_refs(refs: Sequence[str], image: object) -> Sequence[str]:
    if isinstance(refs, str) or len(refs) == 0 or not all(isinstance(r, str) for r in refs):
        raise ValueError(f"references of image {image!r} must be a non-empty list of strings, got {refs!r}")
    return refs


def _match(text: np.ndarray, gram: np.ndarray, text_image: np.ndarray, n_cand: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (candidate row, reference row) holding the same n-gram, the reference being of the candidate's image.

    Rows are (text, n-gram) entries sorted by text; texts below ``n_cand`` are candidates.
    """
    n_cand_rows = int(np.searchsorted(text, n_cand))
    key_base = int(gram.max()) + 1 if len(gram) else 1
    ref_key = text_image[text[n_cand_rows:]] * key_base + gram[n_cand_rows:]
    if len(ref_key) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    ref_rows = np.argsort(ref_key, kind="stable")
    ref_key = ref_key[ref_rows]
    group_start = np.flatnonzero(np.concatenate([[True], ref_key[1:] != ref_key[:-1]]))
    group_size = np.diff(np.append(group_start, len(ref_key)))
    group_key = ref_key[group_start]
    cand_key = text_image[text[:n_cand_rows]] * key_base + gram[:n_cand_rows]
    pos = np.minimum(np.searchsorted(group_key, cand_key), len(group_key) - 1)
    c_row = np.flatnonzero(group_key[pos] == cand_key)
    lo, hits = group_start[pos[c_row]], group_size[pos[c_row]]
    first = np.cumsum(hits) - hits
    r_row = ref_rows[np.arange(hits.sum()) - np.repeat(first - lo, hits)]
    return np.repeat(c_row, hits), n_cand_rows + r_row


def _corpus_df(ref_doc: np.ndarray, ref_gram: np.ndarray, doc_weight: np.ndarray, gram: np.ndarray) -> np.ndarray:
    """df of each ``gram``: total ``doc_weight`` of the documents whose (ref_doc, ref_gram) rows hold it."""
    size = int(gram.max()) + 1 if len(gram) else 0
    pairs = sorted_unique(ref_doc * size + ref_gram)
    return np.bincount(pairs % size, weights=doc_weight[pairs // size], minlength=size)[gram]
