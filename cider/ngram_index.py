"""Integer ids for n-grams, so that CIDEr can be computed with array operations.

Every word gets an id; a k-gram (k >= 2) gets an id from the pair (id of its (k-1)-gram
prefix, id of its last word). A fixed document-frequency table (the df file) is stored as
one sorted array of such pair keys per order. Words and n-grams met in a call that are
not in the table get *local* ids, valid for that call only; their df is 0.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain, count, repeat

import numpy as np

from cider.ngrams import Ngram


class NgramIndex:
    """Document frequencies of n-grams of order 1..n, indexed for vectorised lookup."""

    def __init__(self, df: Mapping[Ngram, float], n: int):
        all_grams = list(df)
        if set(map(type, all_grams)) - {tuple}:
            bad = next(g for g in all_grams if type(g) is not tuple)
            raise TypeError(f"document frequency keys must be tuples of words, got {bad!r}")
        lengths = np.fromiter(map(len, all_grams), dtype=np.int64, count=len(all_grams))
        all_counts = np.fromiter(df.values(), dtype=np.float64, count=len(all_grams))
        where = [np.flatnonzero(lengths == k) for k in range(1, n + 1)]
        grams = [list(map(all_grams.__getitem__, w.tolist())) for w in where]
        counts = [all_counts[w] for w in where]
        self.n = n
        self.words: dict[str, int] = dict(zip(dict.fromkeys(chain.from_iterable(chain.from_iterable(grams))), count()))
        rows = [
            np.fromiter(map(self.words.__getitem__, chain.from_iterable(gs)), dtype=np.int64).reshape(len(gs), k + 1)
            for k, gs in enumerate(grams)
        ]
        self.n_words = len(self.words)
        # keys[k]: sorted keys (prefix id * n_words + word id) of the (k+1)-grams; order 1 is the word id itself.
        self.keys: list[np.ndarray] = [np.arange(self.n_words, dtype=np.int64)]
        prefix_ids = [r[:, 0] for r in rows]  # id of each gram's first k+1 words, at the current order
        dfs = [np.zeros(self.n_words)]
        dfs[0][prefix_ids[0]] = counts[0]
        for k in range(1, n):
            # every prefix of a longer n-gram gets an entry (df 0 if the table lacks it)
            keys = [prefix_ids[j] * self.n_words + rows[j][:, k] for j in range(k, n)]
            self.keys.append(sorted_unique(np.concatenate(keys)))
            for j, key in zip(range(k, n), keys):
                prefix_ids[j] = np.searchsorted(self.keys[k], key)
            dfs.append(np.zeros(len(self.keys[k])))
            dfs[k][prefix_ids[k]] = counts[k]
        self.sizes = [len(k) for k in self.keys]
        self.df = np.concatenate(dfs)  # all orders, order 1 first
        self.offsets = np.cumsum([0] + self.sizes[:-1])

    @classmethod
    def empty(cls, n: int) -> NgramIndex:
        """An index with no known n-grams (every id is local), as used in corpus mode."""
        return cls({}, n)

    def word_ids(self, words: Sequence[str]) -> tuple[np.ndarray, int]:
        """Ids of ``words``; unknown words get local ids from ``n_words`` on. Returns (ids, #local words)."""
        known = self.words
        new = [w for w in dict.fromkeys(words) if w not in known]
        local = dict(zip(new, range(self.n_words, self.n_words + len(new))))
        if not known:
            return np.fromiter(map(local.__getitem__, words), dtype=np.int64, count=len(words)), len(new)
        ids = np.fromiter(map(known.get, words, repeat(-1)), dtype=np.int64, count=len(words))
        unknown = np.flatnonzero(ids < 0)
        ids[unknown] = [local[words[i]] for i in unknown.tolist()]
        return ids, len(new)

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Count the n-grams of each text.

        Returns ``(text, order, gram, tf, lengths)``: one row per distinct (text, n-gram),
        sorted by text, then order (0-based), then gram id; ``gram`` indexes ``self.df``
        when below ``len(self.df)``, otherwise it is a local n-gram (df 0). ``lengths`` is the
        word count of each text.
        """
        split = list(map(str.split, texts))
        lengths = np.fromiter(map(len, split), dtype=np.int64, count=len(split))
        words = list(chain.from_iterable(split))
        wid, n_local_words = self.word_ids(words)
        n_tok = len(words)
        after = np.repeat(np.cumsum(lengths), lengths) - np.arange(n_tok) - 1  # tokens after each one
        starts, ids, n_local = np.arange(n_tok), wid, n_local_words
        per_order = [(starts, ids, n_local)]
        for k in range(1, self.n):
            keep = after[starts] >= k  # a (k+1)-gram starts here
            starts = starts[keep]
            ids, n_local = self._extend(k, ids[keep], n_local, wid[starts + k], self.n_words + n_local_words)
            per_order.append((starts, ids, n_local))
        # global gram ids: all table entries first (matching self.df), then the local ones, order by order
        n_gram = len(self.df) + sum(p[2] for p in per_order)
        local_base = len(self.df)
        tok_text = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
        keys = []
        for k, (starts, ids, n_local) in enumerate(per_order):
            size = self.sizes[k]
            gram = np.where(ids < size, ids + self.offsets[k], ids - size + local_base)
            keys.append((tok_text[starts] * self.n + k) * n_gram + gram)
            local_base += n_local
        uniq, tf = np.unique(np.concatenate(keys), return_counts=True)
        bin_, gram = np.divmod(uniq, n_gram)
        text, order = np.divmod(bin_, self.n)
        return text, order, gram, tf, lengths

    def _extend(
        self, k: int, prefix: np.ndarray, n_prefix_local: int, last: np.ndarray, n_all_words: int
    ) -> tuple[np.ndarray, int]:
        """Ids at order k (0-based) of the n-grams (prefix id at order k-1, last word id); returns (ids, #local)."""
        size, n_words = self.sizes[k], self.n_words
        ids = np.empty(len(prefix), dtype=np.int64)
        found = np.zeros(len(prefix), dtype=bool)
        known = np.flatnonzero((prefix < self.sizes[k - 1]) & (last < n_words))
        if size and len(known):
            key = prefix[known] * n_words + last[known]
            pos = np.minimum(np.searchsorted(self.keys[k], key), size - 1)
            hit = self.keys[k][pos] == key
            ids[known[hit]] = pos[hit]
            found[known[hit]] = True
        new = np.flatnonzero(~found)
        if (self.sizes[k - 1] + n_prefix_local) * n_all_words >= 2**62:
            raise OverflowError("too many distinct n-grams for 64-bit keys")
        uniq, inverse = np.unique(prefix[new] * n_all_words + last[new], return_inverse=True)
        ids[new] = size + inverse
        return ids, len(uniq)


def sorted_unique(x: np.ndarray) -> np.ndarray:
    """``np.unique(x)`` for integers, by sorting (numpy's default hash-based path is much slower here)."""
    x = np.sort(x)
    return x[np.concatenate([[True], x[1:] != x[:-1]])] if len(x) else x
