"""Typed, strict configuration for the captioning trainer.

YAML files stay flat, exactly like the original's (``batch_size: 200``), but every key is
declared once in one of the section dataclasses below with its type and its default. The
defaults are the original's *effective* defaults (its argparse defaults, reference §8.1), so
a faithful YAML file means what it meant there.

Resolution order (later wins), as in the original's ``tools/train_pl.py``::

    defaults  <  YAML (``_BASE_`` chain first)  <  --set_cfgs k v ...  <  --key value

Errors are strict: an unknown key (with the closest known key suggested), a duplicate key in
one YAML file, a value of the wrong type and a ``_BASE_`` cycle all raise :class:`ConfigError`
naming the file and the key.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from captioning.utils.io import write_text

BASE_KEY = "_BASE_"


class ConfigError(ValueError):
    """A configuration file or override is invalid."""


@dataclass
class DataConfig:
    """Where the preprocessed data lives and how it is batched."""

    input_json: str = "data/coco.json"
    input_label_h5: Optional[str] = "data/coco_label.h5"
    input_att_dir: str = "data/cocotalk_att"
    input_fc_dir: str = "data/cocotalk_fc"
    input_clipscore_vis_dir: str = "data/cocotalk_clipscore_vis"
    input_ref_json: Optional[str] = "data/dataset_coco.json"  # raw references for language eval
    feature_clip_model: str = "RN50"  # the CLIP that made input_att_dir (tools/caption.py reuses it)
    feature_resolution: int = 448     # its input size for grid features (square resize)
    cached_tokens: str = "coco-train-idxs"  # CIDEr-D reward df: data/<name>.p, or a path ending in .p
    batch_size: int = 16
    seq_per_img: int = 5
    train_only: int = 0
    data_in_memory: bool = False
    num_workers: int = 4
    norm_att_feat: int = 0
    use_box: int = 0
    norm_box_feat: int = 0


@dataclass
class ModelConfig:
    """Transformer captioner sizes (reference §3)."""

    caption_model: str = "transformer"
    N_enc: int = 6
    N_dec: int = 6
    d_model: int = 512
    d_ff: int = 2048
    num_att_heads: int = 8
    dropout: float = 0.1
    drop_prob_lm: float = 0.5
    att_feat_size: int = 2048
    max_length: int = 20
    mle_encode_once: bool = False  # MLE: encoder once per image, its captions share the memory (and its dropout)


@dataclass
class OptimConfig:
    """Optimiser, learning-rate schedule and gradient clipping (reference §4.2)."""

    optim: str = "adam"
    learning_rate: float = 4e-4
    learning_rate_decay_start: int = -1
    learning_rate_decay_every: int = 3
    learning_rate_decay_rate: float = 0.8
    optim_alpha: float = 0.9
    optim_beta: float = 0.999
    optim_epsilon: float = 1e-8
    weight_decay: float = 0.0
    noamopt: bool = False
    noamopt_warmup: int = 2000
    noamopt_factor: float = 1.0
    reduce_on_plateau: bool = False
    use_warmup: bool = False
    grad_clip_mode: str = "norm"
    grad_clip_value: float = 0.1
    label_smoothing: float = 0.0
    scheduled_sampling_start: int = -1
    scheduled_sampling_increase_every: int = 5
    scheduled_sampling_increase_prob: float = 0.05
    scheduled_sampling_max_prob: float = 0.25


@dataclass
class RewardConfig:
    """Self-critical training and its rewards (reference §4.4-4.5)."""

    self_critical_after: int = -1
    structure_after: int = -1
    train_sample_n: int = 5
    train_sample_method: str = "sample"
    train_beam_size: int = 1
    sc_sample_method: str = "greedy"
    sc_beam_size: int = 1
    sc_baseline: str = "greedy"
    scst_rescore: bool = False  # sample without a graph, re-score the samples in one teacher-forced pass
    cider_reward_weight: float = 1.0
    bleu_reward_weight: float = 0.0
    entropy_reward_weight: float = 0.0
    self_cider_reward_weight: float = 0.0
    use_clipscore: bool = False
    clipscore_reward_weight: float = 1.0
    clipscore_mode: str = "clip_s"
    use_multi_rewards: bool = False
    use_grammar: bool = False
    use_grammar_baseline: bool = False
    clip_load_path: Optional[str] = None
    clip_model: str = "ViT-B/32"
    keep_mle_optimizer_state: bool = False  # with --init_from: carry its Adam state (moments, betas, eps)


@dataclass
class DecodeConfig:
    """Decoding used for validation, test and inference (reference §3)."""

    sample_method: str = "greedy"
    beam_size: int = 1
    sample_n: int = 1
    temperature: float = 1.0
    group_size: int = 1
    diversity_lambda: float = 0.5
    length_penalty: str = ""
    block_trigrams: int = 0
    remove_bad_endings: int = 0
    suppress_UNK: int = 1
    decoding_constraint: int = 0


@dataclass
class TrainConfig:
    """Run identity, trainer, checkpoints and evaluation."""

    id: str = ""
    checkpoint_path: Optional[str] = None  # folder of <id>-last.ckpt; None = save/<id>
    start_from: Optional[str] = None
    init_from: Optional[str] = None
    resume: Optional[str] = None
    max_epochs: int = -1
    limit_train_batches: int = -1  # at most this many training batches per epoch (-1: all); short demo runs
    accumulate_grad_batches: int = 1  # optimiser step every k batches (global batch = k * batch_size)
    precision: str = "32"
    seed: int = 1234
    num_threads: int = 0  # torch CPU threads per process; 0 = torch's default (all cores)
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    language_eval: int = 0
    eval_clipscore: bool = False  # CLIP-S / RefCLIP-S at val/test without the CLIP-S reward (loads clip_vis_feats)
    losses_log_every: int = 25
    load_best_score: int = 1
    val_split: str = "val"

    def gradient_accumulation(self) -> int:
        """``accumulate_grad_batches``, checked: an integer >= 1."""
        if self.accumulate_grad_batches < 1:
            raise ConfigError(f"accumulate_grad_batches must be >= 1, got {self.accumulate_grad_batches}")
        return self.accumulate_grad_batches


@dataclass
class LegacyConfig:
    """Keys the original's configs set but that have no effect for the transformer captioner.

    They are accepted so that the original's YAML files load unchanged; they change nothing.
    """

    num_layers: int = 1
    input_encoding_size: int = 512
    rnn_size: int = 512
    rnn_type: str = "lstm"
    att_hid_size: int = 512
    fc_feat_size: int = 2048
    use_bn: int = 0
    val_images_use: int = 3200
    save_checkpoint_every: int = 2500
    verbose: bool = False
    REFORWARD: bool = False


class FlatConfig:
    """Base of a root config: a dataclass whose fields are section dataclasses.

    Keys are unique across sections, so files and command lines stay flat while code reads
    ``cfg.model.d_model``. Other tools (e.g. ``retrieval/``) define their own root configs.
    """

    @classmethod
    @functools.cache
    def index(cls) -> tuple[dict[str, str], dict[str, Any]]:
        """(key -> section name, key -> declared type)."""
        sections: dict[str, str] = {}
        key_types: dict[str, Any] = {}
        for section, section_cls in typing.get_type_hints(cls).items():
            hints = typing.get_type_hints(section_cls)
            for f in dataclasses.fields(section_cls):
                if f.name in sections:
                    raise RuntimeError(f"config key {f.name!r} declared twice ({sections[f.name]}, {section})")
                sections[f.name] = section
                key_types[f.name] = hints[f.name]
        return sections, key_types

    @classmethod
    def section_of(cls, key: str, source: str = "<code>") -> str:
        """Section that declares ``key``; an unknown key raises with the closest known key."""
        sections = cls.index()[0]
        if key in sections:
            return sections[key]
        close = difflib.get_close_matches(key, sections, n=1, cutoff=0.6)
        if not close:
            lowered = {k.lower(): k for k in sections}
            close = [lowered[c] for c in difflib.get_close_matches(key.lower(), lowered, n=1, cutoff=0.6)]
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{source}: unknown config key {key!r}{hint}")

    @classmethod
    def key_type(cls, key: str) -> Any:
        return cls.index()[1][key]

    def get(self, key: str) -> Any:
        """Value of a flat key, e.g. ``cfg.get("batch_size")``."""
        return getattr(getattr(self, self.section_of(key)), key)

    def set(self, key: str, value: Any, source: str = "<code>") -> None:
        """Set a flat key, converting ``value`` to the declared type."""
        section = self.section_of(key, source)
        setattr(getattr(self, section), key, coerce(value, self.key_type(key), key, source))

    def to_flat_dict(self) -> dict[str, Any]:
        """All keys and values, flat, in declaration order."""
        return {k: self.get(k) for k in self.index()[0]}


@dataclass
class Config(FlatConfig):
    """The captioning trainer's configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    legacy: LegacyConfig = field(default_factory=LegacyConfig)


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def coerce(value: Any, typ: Any, key: str, source: str = "<code>") -> Any:
    """Convert ``value`` (from YAML or a command line string) to ``typ`` or raise ConfigError."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in {"none", "null", "~", ""}):
            return None
        return coerce(value, args[0], key, source)

    def fail() -> ConfigError:
        return ConfigError(f"{source}: key {key!r} expects {typ.__name__}, got {value!r} ({type(value).__name__})")

    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise fail()
    if typ is int:
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                try:
                    as_float = float(value)
                except ValueError:
                    raise fail() from None
                if as_float.is_integer():
                    return int(as_float)
        raise fail()
    if typ is float:
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise fail() from None
        raise fail()
    if typ is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise fail()
    raise ConfigError(f"{source}: key {key!r} has unsupported type {typ!r}")


class _StrictLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects duplicate keys instead of keeping the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    mapping = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(
                f"{loader.name}: duplicate key {key!r} at line {line} (first at line {seen[key]}); "
                "the original's loader silently kept the last value, remove one of them"
            )
        seen[key] = line
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read one YAML mapping strictly (safe loader, duplicate keys rejected)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        loader = _StrictLoader(f)
        loader.name = str(path)
        try:
            data = loader.get_single_data()
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
        finally:
            loader.dispose()
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def _yaml_chain(path: Path, stack: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """The file and its ``_BASE_`` ancestors, the most basic first."""
    path = path.resolve()
    if path in stack:
        cycle = " -> ".join(str(p) for p in (*stack, path))
        raise ConfigError(f"_BASE_ cycle: {cycle}")
    data = read_yaml(path)
    base = data.pop(BASE_KEY, None)
    chain: list[tuple[Path, dict[str, Any]]] = []
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: {BASE_KEY} must be a path string, got {base!r}")
        chain = _yaml_chain(path.parent / base, (*stack, path))
    chain.append((path, data))
    return chain


def load_config(
    path: str | os.PathLike | None = None,
    set_cfgs: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    schema: type[FlatConfig] = Config,
) -> Any:
    """Build a config (a ``schema`` instance) from defaults, a YAML file (with bases) and overrides."""
    cfg = schema()
    if path is not None:
        for file, data in _yaml_chain(Path(path)):
            for key, value in data.items():
                cfg.set(str(key), value, source=str(file))
    if set_cfgs:
        if len(set_cfgs) % 2:
            raise ConfigError(f"--set_cfgs needs key/value pairs, got an odd number of items: {set_cfgs}")
        for key, value in zip(set_cfgs[::2], set_cfgs[1::2]):
            cfg.set(key, value, source="--set_cfgs")
    for key, value in (overrides or {}).items():
        cfg.set(key, value, source=f"--{key}")
    return cfg


def config_from_dict(values: dict[str, Any], source: str = "<checkpoint>", schema: type[FlatConfig] = Config) -> Any:
    """A config from a flat mapping (e.g. the one stored in a checkpoint); unknown keys are errors."""
    cfg = schema()
    for key, value in values.items():
        cfg.set(key, value, source=source)
    return cfg


def parse_args(argv: list[str], schema: type[FlatConfig] = Config) -> tuple[Any, str | None]:
    """Parse ``--cfg FILE [--set_cfgs k v ...] [--key value | --key=value | --flag] ...``.

    Returns the resolved config and the config file path. A bare ``--flag`` sets a boolean
    key to true.
    """
    cfg_path: str | None = None
    set_cfgs: list[str] = []
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected command-line argument {arg!r}; options look like --key value")
        name, eq, inline = arg[2:].partition("=")
        if name == "set_cfgs":
            j = i + 1
            while j < len(argv) and not argv[j].startswith("--"):
                set_cfgs.append(argv[j])
                j += 1
            i = j
            continue
        has_value = bool(eq) or (i + 1 < len(argv) and not argv[i + 1].startswith("--"))
        value = inline if eq else (argv[i + 1] if has_value else None)
        i += 2 if has_value and not eq else 1
        if name == "cfg":
            if value is None:
                raise ConfigError("--cfg needs a file path")
            cfg_path = value
            continue
        schema.section_of(name, f"--{name}")
        if value is None:
            if schema.key_type(name) is not bool:
                raise ConfigError(f"--{name} needs a value")
            value = True
        overrides[name] = value
    return load_config(cfg_path, set_cfgs, overrides, schema), cfg_path


def dump_config(cfg: FlatConfig) -> str:
    """The resolved config as flat YAML that :func:`load_config` reads back to an equal config."""
    lines = ["# Resolved configuration (all keys); re-load with --cfg this_file"]
    for section in (f.name for f in dataclasses.fields(cfg)):
        lines.append(f"# {section}")
        values = dataclasses.asdict(getattr(cfg, section))
        lines.append(yaml.safe_dump(values, sort_keys=False, default_flow_style=False).rstrip())
    return "\n".join(lines) + "\n"


def save_config(cfg: FlatConfig, path: str | os.PathLike) -> None:
    """Write the resolved config atomically (every run writes it next to its checkpoints)."""
    write_text(path, dump_config(cfg))
