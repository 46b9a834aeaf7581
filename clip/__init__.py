"""The project's CLIP: OpenAI-compatible model, loader, tokenizer and transforms (see clip/README.md)."""
from . import transforms
from .inference import grid_features, image_embeddings, text_embeddings
from .model import CLIP, build_model, convert_to_fp16, default_heads, infer_config, tiny_clip_config
from .pretrained import (
    TorchFileError,
    WeightsUnavailableError,
    available_models,
    load,
    model_file,
    read_state_dict,
    torch_load,
)
from .tokenizer import SimpleTokenizer, tokenize

__all__ = [
    "CLIP", "SimpleTokenizer", "TorchFileError", "WeightsUnavailableError", "available_models", "build_model", "convert_to_fp16",
    "default_heads", "grid_features", "image_embeddings", "infer_config", "load", "model_file", "read_state_dict",
    "text_embeddings", "tiny_clip_config", "tokenize", "torch_load", "transforms",
]
