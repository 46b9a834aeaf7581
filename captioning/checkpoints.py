"""Reading captioner checkpoints: ours and the original's released ``.ckpt`` files.

Our format: a Lightning-style dict whose ``state_dict`` holds the captioner under ``model.*`` and
whose ``hyper_parameters`` are ``{"config": flat config dict, "vocab": ix_to_word}``. It loads
with ``torch.load(weights_only=True)``.

The original's format (docs/ORIGINAL.md §4.6): a PyTorch-Lightning 1.0 checkpoint. Its ``state_dict``
holds the captioner under the original parameter names (ours are the same) plus two uint8
tensors, ``_vocab`` (a pickled ``ix_to_word`` dict) and ``_opt`` (a pickled
``captioning.utils.opts.Config``, a plain object whose attributes are the run's options). The
rest of the file pickles the callback class ``__main__.ModelCheckpoint`` and optimizer states.

What is accepted, and nothing here runs code from a file:

* The outer file is read by ``torch.load(weights_only=True)``. Globals outside torch's allow
  list (such as ``__main__.ModelCheckpoint``) are *neutralised*: each is replaced by an inert
  stand-in class that accepts any arguments and keeps no state, so it is never imported or
  called. Globals of the modules torch blocks outright (``os``, ``sys``, ...) are refused. The
  neutralised names are logged at debug level. The ``state_dict`` must hold tensors only.
* ``_opt`` and ``_vocab`` are unpickled by a restricted unpickler that knows exactly one class,
  ``captioning.utils.opts.Config`` (read as a plain mapping of its attributes), plus the builtins
  plain data needs (``set``, ``frozenset``, ``complex``, ``bytearray``, ``OrderedDict``). Any
  other global is refused.
"""
from __future__ import annotations

import builtins
import collections
import importlib.metadata
import io
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from captioning.cli import InputError
from captioning.config import Config, ConfigError
from captioning.utils.io import atomic_path

log = logging.getLogger(__name__)

__all__ = ["read_captioner_checkpoint", "load_lightning_checkpoint", "checkpoint_state_dict", "unpickle_options",
           "unpickle_vocab", "options_to_config", "save_captioner_checkpoint", "convert_captioner_checkpoint"]

class CheckpointFileError(InputError):
    """A checkpoint file is unreadable or does not hold a captioner."""


# Globals neutralised even when they cannot be listed beforehand (legacy, non-zip files).
KNOWN_FOREIGN_GLOBALS = ("__main__.ModelCheckpoint", "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint")


class Neutralised:
    """Inert stand-in for a class or function named in a checkpoint: takes anything, keeps nothing."""

    source = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "Neutralised":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<neutralised {self.source}>"


def _stand_in(full_name: str) -> tuple[type, str]:
    return type(full_name.rsplit(".", 1)[-1], (Neutralised,), {"source": full_name}), full_name


def load_lightning_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A (foreign) Lightning checkpoint as a dict, with untrusted globals neutralised (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
        raise RuntimeError(f"reading {path} needs torch >= 2.6 (named safe globals); this is torch {torch.__version__}")
    names = set(KNOWN_FOREIGN_GLOBALS)
    try:
        names.update(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except ValueError:
        pass  # a legacy (non-zip) torch file cannot be listed; the known names still apply
    except (pickle.UnpicklingError, EOFError) as e:
        raise CheckpointFileError(f"{path}: unreadable checkpoint ({e})") from None
    except RuntimeError as e:
        if "PytorchStreamReader" not in str(e) and "zip archive" not in str(e):
            raise
        raise CheckpointFileError(f"{path}: truncated or corrupt checkpoint ({str(e).split('. ')[0]}); copy or "
                                  "write it again") from None
    log.debug("%s: globals neutralised where present: %s", path, sorted(names))
    try:
        with torch.serialization.safe_globals([_stand_in(n) for n in sorted(names)]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointFileError(f"{path}: refused to load ({e})") from None
    except (EOFError, KeyError) as e:
        raise CheckpointFileError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e}); is it truncated or not "
                                  "a checkpoint?") from None
    if not isinstance(ckpt, dict):
        raise CheckpointFileError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def checkpoint_state_dict(ckpt: dict[str, Any], path: str | os.PathLike) -> dict[str, Tensor]:
    """``ckpt['state_dict']`` (or ``ckpt`` itself when it is a bare state dict), tensors only."""
    state = ckpt.get("state_dict", ckpt)
    if not isinstance(state, dict):
        raise CheckpointFileError(f"{path}: 'state_dict' is a {type(state).__name__}, not a dict")
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointFileError(f"{path}: state_dict entries that are not tensors: {bad[:5]}")
    return state


# ----- the original's pickled options and vocabulary -----


class OriginalOptions(dict):
    """What ``captioning.utils.opts.Config`` unpickles to: a plain dict of its attributes."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise pickle.UnpicklingError("captioning.utils.opts.Config state is not a dict of attribute names")
        self.update(state)


_PLAIN = {("builtins", n): getattr(builtins, n) for n in ("set", "frozenset", "complex", "bytearray")}
_PLAIN[("collections", "OrderedDict")] = collections.OrderedDict
_PLAIN[("captioning.utils.opts", "Config")] = OriginalOptions


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PLAIN:
            return _PLAIN[module, name]
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only captioning.utils.opts.Config "
                                     "and plain data are accepted")


def _tensor_bytes(t: Tensor, name: str) -> bytes:
    if t.dtype != torch.uint8 or t.dim() != 1:
        raise CheckpointFileError(f"{name} must be a 1-D uint8 tensor (a pickle), got {t.dtype} of shape {tuple(t.shape)}")
    return t.detach().cpu().contiguous().numpy().tobytes()


def restricted_unpickle(data: bytes, what: str) -> Any:
    """Unpickle ``data`` allowing only the original's options class and plain data."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointFileError(f"{what}: {e}") from None


def unpickle_options(data: bytes | Tensor) -> dict[str, Any]:
    """The original's ``_opt`` (a pickled ``captioning.utils.opts.Config``) as a plain dict."""
    raw = _tensor_bytes(data, "_opt") if isinstance(data, Tensor) else data
    opts = restricted_unpickle(raw, "_opt")
    if not isinstance(opts, OriginalOptions):
        raise CheckpointFileError(f"_opt holds a {type(opts).__name__}, not a captioning.utils.opts.Config")
    return dict(opts)


def unpickle_vocab(data: bytes | Tensor) -> dict[str, str]:
    """The original's ``_vocab`` (a pickled ``ix_to_word`` dict), keys as strings "1".."V"."""
    raw = _tensor_bytes(data, "_vocab") if isinstance(data, Tensor) else data
    vocab = restricted_unpickle(raw, "_vocab")
    if not isinstance(vocab, dict) or not all(isinstance(w, str) for w in vocab.values()):
        raise CheckpointFileError("_vocab is not a dict of words")
    vocab = {str(k): w for k, w in vocab.items()}
    if sorted(vocab, key=int) != [str(i) for i in range(1, len(vocab) + 1)]:
        raise CheckpointFileError("_vocab keys are not the indices 1..V")
    return vocab


# Config keys taken from the original's options; every other key keeps our default (the
# original's effective training settings differ from some stored options, and run locations
# such as checkpoint_path mean something else here).
_CARRIED_SECTIONS = ("model", "decode")
_CARRIED_KEYS = ("norm_att_feat", "use_box", "norm_box_feat", "id")


def options_to_config(opts: dict[str, Any]) -> dict[str, Any]:
    """Our flat config (all keys) for a model trained with the original's options ``opts``.

    The model sizes follow the original's fallbacks (``N_enc``/``N_dec`` default to
    ``num_layers``, ``d_model`` to ``input_encoding_size``, ``d_ff`` to ``rnn_size``, 8 heads,
    dropout 0.1, ``max_length`` 20 or else ``seq_length``). Decoding keys and the feature
    normalisation switches are carried over; all other keys keep our defaults.
    """
    if opts.get("caption_model", "show_tell") != "transformer":
        raise CheckpointFileError(f"the checkpoint's caption_model is {opts.get('caption_model', 'show_tell')!r}; "
                         "only 'transformer' captioners can be converted")
    values = dict(opts)
    values.setdefault("N_enc", opts.get("num_layers", 1))
    values.setdefault("N_dec", opts.get("num_layers", 1))
    values.setdefault("d_model", opts.get("input_encoding_size", 512))
    values.setdefault("d_ff", opts.get("rnn_size", 512))
    values.setdefault("num_att_heads", 8)
    values.setdefault("dropout", 0.1)
    values["max_length"] = opts.get("max_length", 20) or opts.get("seq_length")
    cfg = Config()
    carried, other, unknown = [], [], []
    for key, value in values.items():
        try:
            section = Config.section_of(key)
        except ConfigError:
            unknown.append(key)
            continue
        if section in _CARRIED_SECTIONS or key in _CARRIED_KEYS:
            cfg.set(key, value, source=f"original option {key!r}")
            carried.append(key)
        else:
            other.append(key)
    log.debug("options carried over: %s", sorted(carried))
    log.debug("known options left at our defaults: %s", sorted(other))
    log.debug("options ignored (not ours): %s", sorted(unknown))
    return cfg.to_flat_dict()


def _check_sizes(state: dict[str, Tensor], config: dict[str, Any], vocab: dict[str, str], path: Any) -> None:
    """The config and vocabulary must describe the weights."""
    def count(prefix: str) -> int:
        return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})

    try:
        found = {"d_model": state["att_embed.0.weight"].shape[0], "att_feat_size": state["att_embed.0.weight"].shape[1],
                 "d_ff": state["model.encoder.layers.0.feed_forward.w_1.weight"].shape[0],
                 "N_enc": count("model.encoder.layers."), "N_dec": count("model.decoder.layers.")}
        n_out = state["model.generator.proj.weight"].shape[0]
    except KeyError as e:
        raise CheckpointFileError(f"{path}: not a transformer captioner (missing {e})") from None
    wrong = {k: (config[k], v) for k, v in found.items() if config[k] != v}
    if wrong:
        details = (f"{k} is {c} in the options but {w} in the weights" for k, (c, w) in wrong.items())
        raise CheckpointFileError(f"{path}: options and weights disagree: " + ", ".join(details))
    if n_out != len(vocab) + 1:
        raise CheckpointFileError(f"{path}: the vocabulary has {len(vocab)} words but the weights have {n_out} output classes "
                         "(V + 1 expected)")
    if config["d_model"] % config["num_att_heads"]:
        raise CheckpointFileError(f"{path}: d_model {config['d_model']} is not divisible by {config['num_att_heads']} heads")


def read_captioner_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str], dict[str, Any]]:
    """(TransformerCaptioner state dict, ``ix_to_word``, flat config) of our or the original's checkpoint.

    The state dict has no ``model.`` prefix and loads strictly into
    ``TransformerCaptioner``; for an original checkpoint the config is built by
    :func:`options_to_config`.
    """
    ckpt = load_lightning_checkpoint(path)
    state = checkpoint_state_dict(ckpt, path)
    if "_opt" in state or "_vocab" in state:
        if "_opt" not in state or "_vocab" not in state:
            raise CheckpointFileError(f"{path}: an original checkpoint needs both _vocab and _opt in its state_dict")
        vocab = unpickle_vocab(state["_vocab"])
        config = options_to_config(unpickle_options(state["_opt"]))
        weights = {k: v for k, v in state.items() if k not in ("_opt", "_vocab")}
        _check_sizes(weights, config, vocab, path)
        return weights, vocab, config
    hp = ckpt.get("hyper_parameters") or {}
    if not isinstance(hp, dict) or "config" not in hp or "vocab" not in hp:
        raise CheckpointFileError(f"{path} is neither an original captioner checkpoint (_vocab/_opt in its state_dict) nor "
                         "one of ours (hyper_parameters with config and vocab)")
    weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    if not weights:
        raise CheckpointFileError(f"{path} holds no captioner weights (no 'model.*' keys in its state_dict)")
    return weights, dict(hp["vocab"]), dict(hp["config"])


def save_captioner_checkpoint(path: str | os.PathLike, state: dict[str, Tensor], vocab: dict[str, str],
                              config: dict[str, Any], **extra: Any) -> None:
    """Write our checkpoint format atomically (plain tensors and data; ``weights_only`` loadable)."""
    ckpt = {
        "state_dict": {f"model.{k}": v.detach().cpu() for k, v in state.items()},
        "hyper_parameters": {"config": config, "vocab": vocab},
        "pytorch-lightning_version": importlib.metadata.version("pytorch-lightning"),
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def convert_captioner_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Rewrite any captioner checkpoint :func:`read_captioner_checkpoint` reads in our format."""
    state, vocab, config = read_captioner_checkpoint(src)
    save_captioner_checkpoint(dst, state, vocab, config, converted_from=Path(src).name)


class CheckpointError(InputError):
    """A checkpoint does not fit the data or the configured model."""


def checkpoint_vocab(path: str | Path) -> dict[str, str]:
    """The vocabulary stored in a captioner checkpoint (ours or the original's)."""
    return read_captioner_checkpoint(path)[1]


def check_checkpoint_vocab(path: str | Path, vocab: dict[str, str], data_vocab: dict[str, str]) -> None:
    """Refuse a checkpoint trained with another vocabulary than the data's."""
    if vocab != data_vocab:
        raise CheckpointError(f"{path} was trained with a different vocabulary ({len(vocab)} words) than the data's "
                              f"({len(data_vocab)} words); use the cocotalk.json it was trained with")
