"""Hugging Face ``CLIPModel`` weights -> our CLIP (OpenAI layout), for ViT models.

Key mapping (``<T>`` = ``text_model.encoder.layers.{i}`` -> ``transformer.resblocks.{i}``,
``<V>`` = ``vision_model.encoder.layers.{i}`` -> ``visual.transformer.resblocks.{i}``):

=====================================================  =============================================
Hugging Face                                           OpenAI layout (ours)
=====================================================  =============================================
text_model.embeddings.token_embedding.weight           token_embedding.weight
text_model.embeddings.position_embedding.weight        positional_embedding
text_model.final_layer_norm.{weight,bias}              ln_final.{weight,bias}
text_projection.weight (E, W)                          text_projection (W, E), transposed
vision_model.embeddings.class_embedding                visual.class_embedding
vision_model.embeddings.patch_embedding.weight         visual.conv1.weight
vision_model.embeddings.position_embedding.weight      visual.positional_embedding
vision_model.pre_layrnorm.{weight,bias}                visual.ln_pre.{weight,bias}
vision_model.post_layernorm.{weight,bias}              visual.ln_post.{weight,bias}
visual_projection.weight (E, W)                        visual.proj (W, E), transposed
logit_scale                                            logit_scale
<T|V>.self_attn.{q,k,v}_proj.{weight,bias}             <..>.attn.in_proj_{weight,bias}: q, k, v stacked
<T|V>.self_attn.out_proj.{weight,bias}                 <..>.attn.out_proj.{weight,bias}
<T|V>.layer_norm1 / layer_norm2                        <..>.ln_1 / ln_2
<T|V>.mlp.fc1 / mlp.fc2                                <..>.mlp.c_fc / mlp.c_proj
*.embeddings.position_ids                              ignored (a buffer of 0..n-1)
=====================================================  =============================================

Hugging Face's ``quick_gelu`` is OpenAI's QuickGELU, so OpenAI-trained weights give the same
outputs. Our CLIP implements only that activation, LayerNorm eps 1e-5, an MLP of 4x the width and
``default_heads`` attention heads; :func:`check_hf_config` refuses a ``config.json`` that says
otherwise. Every Hugging Face key must be used: leftovers are an error.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import Tensor

from .model import default_heads

__all__ = ["hf_to_openai", "check_hf_config", "read_hf_state_dict", "read_hf_folder"]

_DIRECT = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "logit_scale": "logit_scale",
}
_TRANSPOSED = {"text_projection.weight": "text_projection", "visual_projection.weight": "visual.proj"}
_IGNORED = {"text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"}
_TOWERS = {"text_model.encoder.layers.": "transformer.resblocks.",
           "vision_model.encoder.layers.": "visual.transformer.resblocks."}
_BLOCK = {
    "self_attn.out_proj.weight": "attn.out_proj.weight",
    "self_attn.out_proj.bias": "attn.out_proj.bias",
    "layer_norm1.weight": "ln_1.weight",
    "layer_norm1.bias": "ln_1.bias",
    "layer_norm2.weight": "ln_2.weight",
    "layer_norm2.bias": "ln_2.bias",
    "mlp.fc1.weight": "mlp.c_fc.weight",
    "mlp.fc1.bias": "mlp.c_fc.bias",
    "mlp.fc2.weight": "mlp.c_proj.weight",
    "mlp.fc2.bias": "mlp.c_proj.bias",
}
_QKV = re.compile(r"self_attn\.([qkv])_proj\.(weight|bias)")

# Hugging Face's defaults for keys a config.json may omit (CLIPTextConfig / CLIPVisionConfig).
_HF_DEFAULTS = {
    "text": dict(hidden_act="quick_gelu", layer_norm_eps=1e-5, num_attention_heads=8, hidden_size=512,
                 intermediate_size=2048),
    "vision": dict(hidden_act="quick_gelu", layer_norm_eps=1e-5, num_attention_heads=12, hidden_size=768,
                   intermediate_size=3072),
}


def hf_to_openai(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map a Hugging Face ``CLIPModel`` state dict (ViT) to OpenAI-layout keys.

    Raises ``KeyError`` for keys it does not know, for a q/k/v projection without its siblings,
    and for a state dict without both towers.
    """
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        if key in _IGNORED:
            continue
        if key in _DIRECT:
            out[_DIRECT[key]] = value
            continue
        if key in _TRANSPOSED:
            out[_TRANSPOSED[key]] = value.t().contiguous()
            continue
        tower = next((t for t in _TOWERS if key.startswith(t)), None)
        index, _, rest = key[len(tower):].partition(".") if tower else ("", "", "")
        if tower is None or not index.isdigit():
            unknown.append(key)
        elif rest in _BLOCK:
            out[f"{_TOWERS[tower]}{index}.{_BLOCK[rest]}"] = value
        elif m := _QKV.fullmatch(rest):
            qkv.setdefault((f"{_TOWERS[tower]}{index}.attn.in_proj_{m[2]}", key[: -len(rest)]), {})[m[1]] = value
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"not a Hugging Face CLIPModel (ViT) state dict: unknown keys {unknown[:8]}"
                       + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""))
    for (target, source), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            missing = sorted({"q", "k", "v"} - set(parts))
            raise KeyError(f"{source}self_attn: missing the {', '.join(missing)} projection(s)")
        out[target] = torch.cat([parts["q"], parts["k"], parts["v"]])
    for needed in ("text_projection", "visual.proj"):
        if needed not in out:
            raise KeyError(f"not a full Hugging Face CLIPModel state dict: no {needed!r} source "
                           f"({'text_projection' if needed == 'text_projection' else 'visual_projection'}.weight); "
                           "only two-tower CLIPModel weights can be converted")
    return out


def _tower_config(config: dict, tower: str) -> dict:
    """One tower's settings with Hugging Face's defaults filled in (``*_config_dict`` wins, as in HF)."""
    values = dict(_HF_DEFAULTS[tower])
    values.update(config.get(f"{tower}_config") or {})
    values.update(config.get(f"{tower}_config_dict") or {})
    return values


def check_hf_config(config: dict, openai_state_dict: dict[str, Tensor]) -> None:
    """Refuse a ``config.json`` our CLIP cannot reproduce (activation, eps, MLP size, head counts)."""
    if config.get("model_type", "clip") != "clip":
        raise ValueError(f"config.json has model_type {config.get('model_type')!r}; only 'clip' (CLIPModel) "
                         "folders can be loaded")
    widths = {"text": openai_state_dict["ln_final.weight"].shape[0],
              "vision": openai_state_dict["visual.conv1.weight"].shape[0]}
    for tower in ("text", "vision"):
        c = _tower_config(config, tower)
        problems = []
        if c["hidden_act"] != "quick_gelu":
            problems.append(f"hidden_act {c['hidden_act']!r} (ours is QuickGELU, HF 'quick_gelu')")
        if abs(float(c["layer_norm_eps"]) - 1e-5) > 1e-12:
            problems.append(f"layer_norm_eps {c['layer_norm_eps']} (ours is 1e-5)")
        if c["hidden_size"] != widths[tower]:
            problems.append(f"hidden_size {c['hidden_size']} but the weights have width {widths[tower]}")
        if c["intermediate_size"] != 4 * widths[tower]:
            problems.append(f"intermediate_size {c['intermediate_size']} (ours is 4 x width = {4 * widths[tower]})")
        if c["num_attention_heads"] != default_heads(widths[tower]):
            problems.append(f"num_attention_heads {c['num_attention_heads']} (ours uses "
                            f"{default_heads(widths[tower])} for width {widths[tower]}, see clip.default_heads)")
        if problems:
            raise ValueError(f"config.json {tower}_config cannot be reproduced by our CLIP: " + "; ".join(problems))


def _read_weight_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ImportError(f"{path} is a safetensors file; install the `safetensors` package to read it "
                              "(pip install safetensors), or use the folder's pytorch_model.bin") from None
        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise TypeError(f"{path} does not hold a state dict of tensors")
    return state


def read_hf_state_dict(folder: str | Path) -> dict[str, Tensor]:
    """The raw Hugging Face state dict of a ``save_pretrained`` folder.

    Reads ``model.safetensors`` if present, else ``pytorch_model.bin``; sharded checkpoints
    (``*.index.json``) are read shard by shard.
    """
    folder = Path(folder)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return _read_weight_file(folder / name)
        index = folder / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            state: dict[str, Tensor] = {}
            for shard in shards:
                state.update(_read_weight_file(folder / shard))
            return state
    raise FileNotFoundError(f"{folder} holds no PyTorch weights: expected model.safetensors or pytorch_model.bin "
                            "(or their sharded *.index.json); TensorFlow/Flax-only folders are not supported")


def read_hf_folder(folder: str | Path) -> dict[str, Tensor]:
    """OpenAI-layout state dict of a Hugging Face CLIP folder (weights + ``config.json``), checked
    against the config; ``clip.build_model`` turns it into our CLIP."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder} has no config.json; a Hugging Face CLIP folder needs it "
                                "(or convert the bare state dict with clip.hf.hf_to_openai)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    state = hf_to_openai(read_hf_state_dict(folder))
    check_hf_config(config, state)
    return state
