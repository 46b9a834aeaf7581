"""The transformer captioner and its decoders."""
from captioning.models.beam import beam_search, length_penalty_fn
from captioning.models.decoding import DecodeOutput, sample, sampling_logits, sequence_logprobs
from captioning.models.layers import LayerNorm, sinusoid_table
from captioning.models.text import (
    DECODE_BAD_ENDINGS,
    TEXT_BAD_ENDINGS,
    bad_ending_ids,
    decode_sequence,
    strip_bad_endings,
)
from captioning.models.transformer import BOS_IDX, EOS_IDX, PAD_IDX, TransformerCaptioner

__all__ = [
    "BOS_IDX",
    "DECODE_BAD_ENDINGS",
    "DecodeOutput",
    "EOS_IDX",
    "LayerNorm",
    "PAD_IDX",
    "TEXT_BAD_ENDINGS",
    "TransformerCaptioner",
    "bad_ending_ids",
    "beam_search",
    "decode_sequence",
    "length_penalty_fn",
    "sample",
    "sampling_logits",
    "sequence_logprobs",
    "sinusoid_table",
    "strip_bad_endings",
]
