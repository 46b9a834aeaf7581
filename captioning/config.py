"""Typed, strict configuration for the captioning trainer.

YAML files stay flat, exactly like the original's (``batch_size: 200``), but every key is
declared once in one of the section dataclasses below with its type and its default. The
defaults are the original's *effective* defaults (its argparse defaults, docs/ORIGINAL.md §8.1), so
a faithful YAML file means what it meant there.

Resolution order (later wins), as in the original's ``tools/train_pl.py``::

    defaults  <  YAML (``_BASE_`` chain first)  <  --set_cfgs k v ...  <  --key value

Errors are strict: an unknown key (with the closest known key suggested), a duplicate key in
one YAML file, a value of the wrong type, a value out of its range (:data:`RANGES`, checked when
the config is resolved) and a ``_BASE_`` cycle all raise :class:`ConfigError` naming the file
and the key.

Each key's one-line meaning is the comment after it or the string literal below it; ``--help``
(:func:`format_help`) prints them with types, defaults and ranges, grouped by section.

No key does nothing unannounced: every key acts as it did in the original, or is listed in a
config class's ``UNSUPPORTED`` table (setting it to anything but its default is an error giving
the reason), or sits in the ``legacy`` section (keys the original's files set but that had no
effect there either; :meth:`FlatConfig.inert_settings` names those set to non-default values,
and the trainers print them).
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import io
import os
import sys
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

import yaml

from captioning.cli import InputError
from captioning.utils.io import write_text

BASE_KEY = "_BASE_"


class ConfigError(InputError):
    """A configuration file or override is invalid."""


@dataclass
class DataConfig:
    """Where the preprocessed data lives and how it is batched."""

    input_json: str = "data/coco.json"
    """prepro_labels JSON: vocabulary (ix_to_word) and image list"""
    input_label_h5: Optional[str] = "data/coco_label.h5"
    """prepro_labels label file (<prefix>_label.h5); none: no labels (inference)"""
    input_att_dir: str = "data/cocotalk_att"
    """grid features: folder of <id>.npz files or a packed .npy store"""
    input_clipscore_vis_dir: str = "data/cocotalk_clipscore_vis"
    """CLIP-S image embeddings (folder or packed .npy), for CLIP-S rewards and eval_clipscore"""
    input_ref_json: Optional[str] = "data/dataset_coco.json"  # raw references for language eval
    feature_clip_model: str = "RN50"  # the CLIP that made input_att_dir (tools/caption.py reuses it)
    feature_resolution: int = 448     # its input size for grid features (square resize)
    cached_tokens: str = "coco-train-idxs"  # CIDEr-D reward df: data/<name>.p, or a path ending in .p
    batch_size: int = 16
    """images per batch (global: split over devices)"""
    seq_per_img: int = 5
    """captions drawn per image per batch"""
    train_only: int = 0
    """1: restval images are left out of training"""
    data_in_memory: bool = False
    """load all features into memory first"""
    num_workers: int = 4
    """DataLoader worker processes"""
    norm_att_feat: int = 0
    """1: L2-normalise each visual token, as the original's loader did"""
    use_box: int = 0
    """unused (the original's box features); must stay 0"""
    norm_box_feat: int = 0
    """unused (the original's box features)"""


@dataclass
class ModelConfig:
    """Transformer captioner sizes (docs/ORIGINAL.md §3)."""

    caption_model: str = "transformer"
    """captioner architecture; only 'transformer'"""
    N_enc: int = 6
    """encoder layers"""
    N_dec: int = 6
    """decoder layers"""
    d_model: int = 512
    """model width (divisible by num_att_heads)"""
    d_ff: int = 2048
    """feed-forward width"""
    num_att_heads: int = 8
    """attention heads"""
    dropout: float = 0.1
    """dropout inside the transformer"""
    drop_prob_lm: float = 0.5
    """dropout before the output layer"""
    att_feat_size: int = 2048
    """width of the grid features (2048 for CLIP-RN50)"""
    max_length: int = 20
    """longest caption decoded, in words"""
    mle_encode_once: bool = False  # MLE: encoder once per image, its captions share the memory (and its dropout)


@dataclass
class OptimConfig:
    """Optimiser, learning-rate schedule and gradient clipping (docs/ORIGINAL.md §4.2)."""

    optim: str = "adam"
    """optimiser: adam, adamw, sgd, ..."""
    learning_rate: float = 4e-4
    """learning rate (without noamopt)"""
    learning_rate_decay_start: int = -1
    """epoch the step decay starts (-1: never)"""
    learning_rate_decay_every: int = 3
    """epochs between decays"""
    learning_rate_decay_rate: float = 0.8
    """factor of each decay"""
    optim_alpha: float = 0.9
    """Adam beta1"""
    optim_beta: float = 0.999
    """Adam beta2"""
    optim_epsilon: float = 1e-8
    """Adam epsilon"""
    weight_decay: float = 0.0
    """L2 weight decay"""
    noamopt: bool = False
    """use the transformer's Noam schedule (warm-up, then 1/sqrt(step))"""
    noamopt_warmup: int = 2000
    """Noam warm-up steps"""
    noamopt_factor: float = 1.0
    """Noam learning-rate factor"""
    reduce_on_plateau: bool = False
    """reduce the lr when the validation score stalls"""
    use_warmup: bool = False
    """linear lr warm-up (without noamopt)"""
    grad_clip_mode: str = "norm"
    """gradient clipping by norm or by value"""
    grad_clip_value: float = 0.1
    """clipping threshold (0: no clipping)"""
    label_smoothing: float = 0.0
    """label smoothing of the MLE loss"""
    scheduled_sampling_start: int = -1
    """epoch scheduled sampling starts (-1: never)"""
    scheduled_sampling_increase_every: int = 5
    """epochs between increases of the sampling probability"""
    scheduled_sampling_increase_prob: float = 0.05
    """increase of the sampling probability"""
    scheduled_sampling_max_prob: float = 0.25
    """largest sampling probability"""


@dataclass
class RewardConfig:
    """Self-critical training and its rewards (docs/ORIGINAL.md §4.4-4.5)."""

    self_critical_after: int = -1
    """epoch self-critical training starts (-1: never; 0 with --init_from for phase 2)"""
    structure_after: int = -1
    """unused (the original's structure loss); must stay -1"""
    train_sample_n: int = 5
    """captions sampled per image in self-critical training"""
    train_sample_method: str = "sample"
    """how they are sampled (sample, greedy)"""
    train_beam_size: int = 1
    """beam size of training samples; only 1"""
    sc_sample_method: str = "greedy"
    """decoding of the baseline; only greedy"""
    sc_beam_size: int = 1
    """beam size of the greedy baseline"""
    sc_baseline: str = "greedy"
    """baseline: greedy (the greedy caption's reward) or the mean of the other samples"""
    scst_rescore: bool = False  # sample without a graph, re-score the samples in one teacher-forced pass
    cider_reward_weight: float = 1.0
    """weight of CIDEr-D in the reward"""
    bleu_reward_weight: float = 0.0
    """weight of BLEU-4 in the reward"""
    entropy_reward_weight: float = 0.0
    """weight of an entropy bonus"""
    self_cider_reward_weight: float = 0.0
    """weight of the self-CIDEr diversity reward"""
    use_clipscore: bool = False
    """reward with CLIP-S"""
    clipscore_reward_weight: float = 1.0
    """weight of CLIP-S"""
    clipscore_mode: str = "clip_s"
    """clip_s or refclip_s"""
    use_multi_rewards: bool = False
    """combine CLIP-S with CIDEr-D or the grammar reward"""
    use_grammar: bool = False
    """add the grammar head's reward (needs a grammar CLIP in clip_load_path)"""
    use_grammar_baseline: bool = False
    """apply the baseline to the grammar reward too"""
    clip_load_path: Optional[str] = None
    """CLIP (or grammar CLIP) file for the rewards; none: clip_model"""
    clip_model: str = "ViT-B/32"
    """CLIP name or file for the CLIP-S reward and evaluation"""
    keep_mle_optimizer_state: bool = False  # with --init_from: carry its Adam state (moments, betas, eps)


@dataclass
class DecodeConfig:
    """Decoding used for validation, test and inference (docs/ORIGINAL.md §3)."""

    sample_method: str = "greedy"
    """greedy or sample (beam_size 1)"""
    beam_size: int = 1
    """beam size (1: greedy or sampling)"""
    sample_n: int = 1
    """captions per image"""
    temperature: float = 1.0
    """softmax temperature of decoding"""
    group_size: int = 1
    """diverse beam search groups"""
    diversity_lambda: float = 0.5
    """diversity penalty between groups"""
    length_penalty: str = ""
    """beam length penalty, e.g. wu_0.5 or avg_0 ('' : none)"""
    block_trigrams: int = 0
    """1: never repeat a trigram"""
    remove_bad_endings: int = 0
    """1: never end a caption on a function word (and strip such endings)"""
    suppress_UNK: int = 1
    """1: beam search never emits UNK"""
    decoding_constraint: int = 0
    """1: never repeat the previous word"""


@dataclass
class TrainConfig:
    """Run identity, trainer, checkpoints and evaluation."""

    id: str = ""
    """run name: names checkpoints and result files (required)"""
    checkpoint_path: Optional[str] = None  # folder of <id>-last.ckpt; None = save/<id>
    start_from: Optional[str] = None  # folder: resume from <start_from>/<id>-last.ckpt (the original's option)
    init_from: Optional[str] = None   # weights only (a new phase); the epoch count starts at 0
    resume: Optional[str] = None      # PATH or auto: continue a run with its full trainer state
    overwrite: bool = False           # start run <id> again, deleting its checkpoints
    save_every_n_steps: int = 0       # also write <id>-last.ckpt every N optimiser steps (0: epoch ends only)
    max_epochs: int = -1
    """epochs to train (-1: Lightning's default)"""
    limit_train_batches: int = -1  # at most this many training batches per epoch (-1: all); short demo runs
    val_check_interval: int = 0  # also validate every N training batches within an epoch (0: at epoch ends only)
    limit_val_batches: int = -1  # at most this many validation batches per pass (-1: all); cheap curve points
    accumulate_grad_batches: int = 1  # optimiser step every k batches (global batch = k * batch_size)
    precision: str = "32"
    """32, 16 (CUDA mixed) or bf16"""
    seed: int = 1234
    """random seed of weights, data order and sampling"""
    num_threads: int = 0  # torch CPU threads per process; 0 = torch's default (all cores)
    accelerator: str = "auto"
    """auto, cpu or gpu"""
    devices: str = "auto"
    """auto or the number of devices"""
    num_nodes: int = 1
    """machines"""
    strategy: str = "auto"
    """Lightning strategy, e.g. ddp"""
    language_eval: int = 0
    """1: BLEU/METEOR/ROUGE/CIDEr/SPICE at validation and test"""
    eval_clipscore: bool = False  # CLIP-S / RefCLIP-S at val/test without the CLIP-S reward (loads clip_vis_feats)
    losses_log_every: int = 25
    """log the losses every this many steps"""
    loggers: list[str] = field(default_factory=lambda: ["csv", "tensorboard"])  # any of csv, tensorboard, wandb
    wandb_project: str = "clip-caption-reward"  # loggers: [wandb]; the run name is --id
    wandb_entity: Optional[str] = None  # loggers: [wandb]; None: your default entity
    val_split: str = "val"
    """split validated on"""


@dataclass
class LegacyConfig:
    """Keys the original's configs set but that had no effect for its transformer captioner.

    They are accepted so that the original's YAML files load unchanged; they change nothing here
    either, and a run names those set to a non-default value.
    """

    input_fc_dir: str = "data/cocotalk_fc"  # the transformer reads no fc features
    load_best_score: int = 1  # read only by the original's non-Lightning trainer
    num_layers: int = 1
    """no effect (the original's RNN option)"""
    input_encoding_size: int = 512
    """no effect (the original's RNN option)"""
    rnn_size: int = 512
    """no effect (the original's RNN option)"""
    rnn_type: str = "lstm"
    """no effect (the original's RNN option)"""
    att_hid_size: int = 512
    """no effect (the original's RNN option)"""
    fc_feat_size: int = 2048
    """no effect (the original's fc features)"""
    use_bn: int = 0
    """no effect (the original's option)"""
    val_images_use: int = 3200
    """no effect (validation uses the whole split)"""
    save_checkpoint_every: int = 2500
    """no effect (checkpoints are written every epoch)"""
    verbose: bool = False
    """no effect (the original's option)"""
    REFORWARD: bool = False
    """no effect (the original's option)"""


class FlatConfig:
    """Base of a root config: a dataclass whose fields are section dataclasses.

    Keys are unique across sections, so files and command lines stay flat while code reads
    ``cfg.model.d_model``. Other tools (e.g. ``retrieval/``) define their own root configs.
    ``UNSUPPORTED`` maps keys that exist in the original but are not implemented to the reason;
    they may only keep their default value.
    """

    UNSUPPORTED: ClassVar[dict[str, str]] = {}

    @classmethod
    @functools.cache
    def index(cls) -> tuple[dict[str, str], dict[str, Any]]:
        """(key -> section name, key -> declared type)."""
        sections: dict[str, str] = {}
        key_types: dict[str, Any] = {}
        root_hints = typing.get_type_hints(cls)
        for section in (f.name for f in dataclasses.fields(cls)):
            section_cls = root_hints[section]
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

    def check_supported(self) -> None:
        """Raise :class:`ConfigError` for an ``UNSUPPORTED`` key set to a non-default value."""
        defaults = type(self)()
        for key, reason in self.UNSUPPORTED.items():
            if self.get(key) != defaults.get(key):
                raise ConfigError(f"{key}: {self.get(key)!r} is not supported ({reason}); "
                                  f"leave it at {defaults.get(key)!r}")

    def inert_settings(self) -> list[str]:
        """Keys of the ``legacy`` section set to a non-default value (they have no effect)."""
        if not hasattr(self, "legacy"):
            return []
        defaults = type(self)()
        return [f.name for f in dataclasses.fields(self.legacy)
                if getattr(self.legacy, f.name) != getattr(defaults.legacy, f.name)]


@dataclass
class Config(FlatConfig):
    """The captioning trainer's configuration."""

    UNSUPPORTED: ClassVar[dict[str, str]] = {
        "structure_after": "structure losses are not part of the paper's method and are not implemented",
        "entropy_reward_weight": "the entropy reward belongs to the structure losses, which are not implemented",
        "self_cider_reward_weight": "the self-CIDEr diversity reward is not part of the paper's method",
        "use_box": "box features are not used by the transformer over CLIP grids",
        "norm_box_feat": "box features are not used by the transformer over CLIP grids",
        "group_size": "diverse beam search is not implemented",
        "diversity_lambda": "diverse beam search (group_size > 1) is not implemented",
    }

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

    if origin is list:
        if isinstance(value, str):  # a command line: "csv,wandb" or "[csv, wandb]"
            value = value.strip().strip("[]").replace(",", " ").split()
        if not isinstance(value, (list, tuple)):
            raise fail()
        return [coerce(v, typing.get_args(typ)[0], key, source) for v in value]

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
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text (UTF-8) YAML file; give the path of a config file") from None
    loader = _StrictLoader(text)
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


def config_files(path: str | os.PathLike) -> list[Path]:
    """A config file and its ``_BASE_`` ancestors (the most basic first): every file its keys come from."""
    return [file for file, _ in _yaml_chain(Path(path))]


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
    check_ranges(cfg, str(path) if path is not None else "<defaults>")
    cfg.check_supported()
    return cfg


def config_from_dict(values: dict[str, Any], source: str = "<checkpoint>", schema: type[FlatConfig] = Config) -> Any:
    """A config from a flat mapping (e.g. the one stored in a checkpoint); unknown keys are errors."""
    cfg = schema()
    for key, value in values.items():
        cfg.set(key, value, source=source)
    return cfg


def parse_args(argv: list[str], schema: type[FlatConfig] = Config, prog: str = "",
               description: str = "") -> tuple[Any, str | None]:
    """Parse ``--cfg FILE [--set_cfgs k v ...] [--key value | --key=value | --flag] ...``.

    Returns the resolved config and the config file path. A bare ``--flag`` sets a boolean
    key to true. ``--help`` prints every key (:func:`format_help`) and ``--print_config`` the
    resolved config; both then exit with status 0.
    """
    prog = prog or os.path.basename(sys.argv[0]) or "train_pl.py"
    cfg_path: str | None = None
    set_cfgs: list[str] = []
    overrides: dict[str, Any] = {}
    print_config = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "-h":
            arg = "--help"
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected command-line argument {arg!r}; options look like --key value")
        name, eq, inline = arg[2:].partition("=")
        if name == "help":
            print(format_help(schema, prog, description))
            raise SystemExit(0)
        if name == "print_config":
            print_config = True
            i += 1
            continue
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
    cfg = load_config(cfg_path, set_cfgs, overrides, schema)
    if print_config:
        print(dump_config(cfg), end="")
        raise SystemExit(0)
    return cfg, cfg_path


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


# ----- value ranges, checked when a config is resolved (before any data or model is loaded) -----

# key -> (lowest, highest) allowed value, inclusive; None: unbounded. Keys of every schema share it.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "batch_size": (1, None), "valid_batch_size": (1, None), "seq_per_img": (1, None), "num_workers": (0, None),
    "feature_resolution": (32, None), "N_enc": (1, None), "N_dec": (1, None), "d_model": (1, None),
    "d_ff": (1, None), "num_att_heads": (1, None), "dropout": (0, 1), "drop_prob_lm": (0, 1),
    "att_feat_size": (1, None), "max_length": (1, None), "learning_rate_decay_every": (1, None),
    "learning_rate_decay_rate": (0, None), "optim_alpha": (0, 1), "optim_beta": (0, 1), "optim_epsilon": (0, None),
    "weight_decay": (0, None), "noamopt_warmup": (1, None), "grad_clip_value": (0, None),
    "label_smoothing": (0, 1), "scheduled_sampling_increase_every": (1, None),
    "scheduled_sampling_increase_prob": (0, 1), "scheduled_sampling_max_prob": (0, 1), "train_sample_n": (1, None),
    "train_beam_size": (1, None), "sc_beam_size": (1, None), "beam_size": (1, None), "sample_n": (1, None),
    "group_size": (1, None), "diversity_lambda": (0, None), "max_epochs": (-1, None),
    "limit_train_batches": (-1, None), "val_check_interval": (0, None), "limit_val_batches": (-1, None),
    "save_every_n_steps": (0, None), "accumulate_grad_batches": (1, None), "num_threads": (0, None),
    "num_nodes": (1, None),
    "losses_log_every": (1, None), "epochs": (1, None), "embed_dim": (1, None), "image_resolution": (1, None),
    "vision_width": (1, None), "context_length": (1, None), "transformer_width": (1, None),
    "transformer_layers": (1, None), "adam_eps": (0, None), "adam_beta1": (0, 1), "adam_beta2": (0, 1),
    "warmup_ratio": (0, 1), "clip_grad_norm": (0, None), "max_logit_scale": (0, None), "val_every_epochs": (1, None),
    "aug_shift": (0, None), "text_warmup_steps": (0, None), "prompt_prob": (0, 1), "relation_twin_prob": (0, 1),
    "paraphrase_weight": (0, None),
}
# keys that must be strictly positive
POSITIVE = {"learning_rate", "noamopt_factor", "temperature", "lr"}
# key -> allowed values
CHOICES: dict[str, tuple[str, ...]] = {
    "grad_clip_mode": ("norm", "value"),
    "precision": ("32", "32-true", "16", "16-mixed", "bf16", "bf16-mixed"),
}


def _range_text(key: str) -> str:
    """The allowed values of ``key`` in words ('' when any value of its type is allowed)."""
    if key in CHOICES:
        return "one of " + ", ".join(CHOICES[key])
    if key in POSITIVE:
        return "> 0"
    low, high = RANGES.get(key, (None, None))
    if low is not None and high is not None:
        return f"in [{low}, {high}]"
    return f">= {low}" if low is not None else (f"<= {high}" if high is not None else "")


def check_ranges(cfg: FlatConfig, source: str = "<config>") -> None:
    """Raise :class:`ConfigError` naming the first key whose value is out of its range."""
    for key, value in cfg.to_flat_dict().items():
        if value is None:
            continue
        low, high = RANGES.get(key, (None, None))
        bad = ((key in CHOICES and str(value) not in CHOICES[key]) or (key in POSITIVE and not value > 0)
               or (low is not None and value < low) or (high is not None and value > high))
        if bad:
            raise ConfigError(f"{source}: key {key!r} must be {_range_text(key)}, got {value!r}")
    flat = cfg.to_flat_dict()
    if "d_model" in flat and "num_att_heads" in flat and flat["d_model"] % flat["num_att_heads"]:
        raise ConfigError(f"{source}: d_model ({flat['d_model']}) must be divisible by num_att_heads "
                          f"({flat['num_att_heads']}); e.g. d_model "
                          f"{flat['d_model'] // flat['num_att_heads'] * flat['num_att_heads'] or flat['num_att_heads']}")


# ----- --help from the schema: each key's trailing comment or attribute docstring is its meaning -----


def key_help(section_cls: type) -> dict[str, str]:
    """``{key: one-line meaning}`` of a section dataclass, from the comment after the key or the
    string literal on the line below it (one source of truth: the schema itself)."""
    source = textwrap.dedent(inspect.getsource(section_cls))
    comments = {tok.start[0]: tok.string.lstrip("# ").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    out: dict[str, str] = {}
    body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
    for node, following in zip(body, [*body[1:], None]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            text = comments.get(node.lineno, "")
            if (not text and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                text = " ".join(following.value.value.split())
            out[node.target.id] = text
    return out


def _type_name(typ: Any) -> str:
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    return f"{args[0].__name__} or none" if args else getattr(typ, "__name__", str(typ))


def format_help(schema: type[FlatConfig], prog: str, description: str = "") -> str:
    """Usage plus every key with its type, default, allowed range and meaning, grouped by section."""
    out = [f"usage: {prog} --cfg FILE [--set_cfgs KEY VALUE ...] [--KEY VALUE ...] [--print_config] [--help]", ""]
    if description:
        out += [description.strip(), ""]
    out += ["Resolution order (later wins): defaults < YAML (_BASE_ first) < --set_cfgs < --KEY VALUE.",
            "--print_config prints the resolved config and exits. A bare --FLAG sets a bool key to true.", ""]
    defaults = schema()
    for section in dataclasses.fields(schema):
        section_cls = typing.get_type_hints(schema)[section.name]
        title = (section_cls.__doc__ or "").strip().splitlines()[0] if section_cls.__doc__ else ""
        out.append(f"{section.name}: {title}")
        helps = key_help(section_cls)
        hints = typing.get_type_hints(section_cls)
        for f in dataclasses.fields(section_cls):
            value = getattr(getattr(defaults, section.name), f.name)
            allowed = _range_text(f.name)
            extra = f"; {allowed}" if allowed else ""
            out.append(f"  --{f.name} ({_type_name(hints[f.name])}, default {value!r}{extra})")
            out.append(f"      {helps[f.name]}")
        out.append("")
    return "\n".join(out)
