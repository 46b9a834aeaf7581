"""Token-id rows to the "index strings" that the SCST CIDEr-D reward scores, e.g. ``"12 45 7 0"``."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def index_strings(tokens: np.ndarray | torch.Tensor) -> list[str]:
    """Each row of token ids (B, L) as a string of its ids up to and including the first 0.

    A row without a 0 (a sample cut at the length limit, or a label row filled by a
    16-word caption) keeps all its ids and gets no ``0``. This is the original's
    ``array_to_str``, which it applies both to sampled sequences and to the (n, 16)
    label rows used as references.
    """
    if hasattr(tokens, "detach"):  # a torch tensor, on any device
        tokens = tokens.detach().cpu().numpy()
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"expected a 2-D integer array of token ids, got shape {tokens.shape} {tokens.dtype}")
    is_end = tokens == 0
    stop = np.where(is_end.any(axis=1), is_end.argmax(axis=1) + 1, tokens.shape[1])
    return [" ".join(map(str, row[:end])) for row, end in zip(tokens.tolist(), stop.tolist())]
