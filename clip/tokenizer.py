"""CLIP's byte-level BPE tokenizer (vocabulary of 49,408: 256 bytes, 256 word-final bytes, 48,894 merges, SOT, EOT)."""
import gzip
import html
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import ftfy
import regex
import torch

DEFAULT_BPE_PATH = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
_N_MERGES = 49152 - 256 - 2
_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """A reversible map from the 256 byte values to printable unicode characters.

    Printable Latin-1 bytes map to themselves; the others are shifted to code points 256 and up.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in keep}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return mapping


def clean_text(text: str) -> str:
    """ftfy fix, HTML-unescape twice, collapse whitespace, strip, lowercase."""
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return regex.sub(r"\s+", " ", text.strip()).strip().lower()


class SimpleTokenizer:
    def __init__(self, bpe_path: str | Path = DEFAULT_BPE_PATH):
        with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1:_N_MERGES + 1]]
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        base = list(self.byte_encoder.values())
        vocab = base + [c + "</w>" for c in base] + ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = dict(enumerate(vocab))
        self.bpe_ranks = {pair: i for i, pair in enumerate(merges)}
        self.cache = {SOT: SOT, EOT: EOT}
        self.sot_token, self.eot_token = self.encoder[SOT], self.encoder[EOT]

    def bpe(self, token: str) -> str:
        """Apply the merges, lowest rank first, to one pre-token; returns space-separated BPE units."""
        if token in self.cache:
            return self.cache[token]
        word = [*token[:-1], token[-1] + "</w>"]
        while len(word) > 1:
            pair = min(zip(word, word[1:]), key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if pair not in self.bpe_ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self.cache[token] = " ".join(word)
        return self.cache[token]

    def encode(self, text: str) -> list[int]:
        """Text -> BPE ids, without SOT/EOT."""
        ids = []
        for piece in _PATTERN.findall(clean_text(text)):
            piece = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[unit] for unit in self.bpe(piece).split(" "))
        return ids

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """BPE ids -> text. With skip_special, drop SOT, stop at the first EOT and strip spaces
        (so a padded row of `tokenize` decodes to its caption)."""
        ids = [int(i) for i in ids]
        if skip_special:
            ids = [i for i in ids if i != self.sot_token]
            ids = ids[:ids.index(self.eot_token)] if self.eot_token in ids else ids
        text = "".join(self.decoder[i] for i in ids)
        text = bytearray(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace")
        text = text.replace("</w>", " ")
        return text.strip() if skip_special else text


@lru_cache
def default_tokenizer() -> SimpleTokenizer:
    """The shared tokenizer over the packaged vocabulary (loaded once, on first use)."""
    return SimpleTokenizer()


def tokenize(texts: str | Sequence[str], context_length: int = 77, truncate: bool = False) -> torch.Tensor:
    """Texts -> (N, context_length) int64 ids: SOT, BPE ids, EOT, zero padding.

    A text longer than the context raises ValueError naming it, unless `truncate`, which keeps the
    first context_length - 1 tokens and ends with EOT.
    """
    tok = default_tokenizer()
    if isinstance(texts, str):
        texts = [texts]
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [tok.sot_token, *tok.encode(text), tok.eot_token]
        if len(ids) > context_length:
            if not truncate:
                raise ValueError(f"text {text!r} is {len(ids)} tokens long, more than the context length "
                                 f"{context_length}; pass truncate=True to cut it")
            ids = ids[:context_length - 1] + [tok.eot_token]
        result[row, :len(ids)] = torch.tensor(ids)
    return result
