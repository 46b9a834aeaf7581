"""Strict configuration of ``retrieval/train_pl.py`` (docs/ORIGINAL.md §6.3, §8.2).

Keys keep the original's names (``batch_size``, ``lr``, ``adam_eps``, ``epochs``, ``use_grammar``,
...) and the original's effective defaults, so ``configs/clip_negative_text.yaml`` means what it
meant there. Unlike the original (YAML over command line), the command line wins, as in the
captioning trainer: defaults < YAML < ``--set_cfgs`` < ``--key value``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

from captioning.config import FlatConfig
from captioning.training.loggers import check_loggers

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
TASKS = ("grammar", "pretrain")


@dataclass
class RetrievalDataConfig:
    """Captions, image embeddings or images, and batching."""

    input_json: str = "data/cocotalk.json"  # ix_to_word: the words `insert` and `swap` draw
    input_dataset_json: str = "data/dataset_coco.json"  # Karpathy split file with the captions
    input_clipscore_vis_dir: Optional[str] = "data/cocotalk_clipscore_vis"  # None: embed images_root in-process
    images_root: Optional[str] = None  # folder of the Karpathy `filepath`s (pretraining, in-process embeddings)
    scenes_json: Optional[str] = None  # FineShapes truth: pretraining captions are full descriptions
    batch_size: int = 1600
    """captions (and images) per batch; >= 2 for in-batch negatives"""
    valid_batch_size: int = 200
    """batch size of validation"""
    num_workers: int = 4
    """DataLoader worker processes"""
    load_feat: bool = True
    """use precomputed image embeddings (grammar task requires it)"""
    data_in_memory: bool = False
    """load all embeddings into memory first"""
    use_prompt: bool = False  # grammar: prefix "A photo depicts" as the reward does (the original does not)
    prompt_prob: float = 0.0  # pretraining: share of captions prefixed with "A photo depicts"
    hard_negatives: bool = False  # pretraining: add each caption's one-detail-wrong twin as a candidate
    relation_twin_prob: float = 0.0  # pretraining: share of twins that change a relation (where there is one)
    paraphrase_weight: float = 0.0  # pretraining: weight of the text-text loss (paraphrase vs caption and twin)
    text_warmup_steps: int = 0  # pretraining: first train the text tower alone on the text-text loss
    aug_hflip: bool = False  # pretraining: mirror image and scene (left/right swapped in the caption)
    aug_shift: int = 0  # pretraining: random translation of up to this many pixels


@dataclass
class RetrievalModelConfig:
    """The CLIP to fine-tune, or the architecture of a CLIP pretrained from scratch."""

    clip_model: Optional[str] = "ViT-B/32"  # grammar: OpenAI name or file for clip.load
    use_grammar: bool = True
    """train the grammar head on negative texts"""
    joint_out: bool = False
    """the original's joint output head (excludes use_grammar)"""
    embed_dim: int = 128
    """pretraining: joint embedding width"""
    image_resolution: int = 96
    """pretraining: image size"""
    vision_layers: str = "1,1,1,1"  # ResNet stage depths
    vision_width: int = 16
    """pretraining: ResNet width"""
    context_length: int = 48
    """pretraining: text context in tokens"""
    transformer_width: int = 64
    """pretraining: text transformer width"""
    transformer_layers: int = 3
    """pretraining: text transformer layers"""


@dataclass
class RetrievalOptimConfig:
    """AdamW as the original (its ``transformers`` AdamW without a schedule)."""

    optim: str = "adamw"
    """optimiser; only adamw"""
    lr: float = 1e-4
    """learning rate"""
    adam_eps: float = 1e-6
    """AdamW epsilon"""
    adam_beta1: float = 0.9
    """AdamW beta1"""
    adam_beta2: float = 0.999
    """AdamW beta2"""
    weight_decay: float = 0.01
    """AdamW weight decay"""
    weight_decay_rule: str = "original"  # original: only biases skip decay; standard: also norms, embeddings, scale
    lr_schedule: str = "constant"  # constant (original) | cosine (linear warm-up over warmup_ratio, cosine decay)
    warmup_ratio: float = 0.05  # cosine schedule only (the original defines it but never uses it)
    clip_grad_norm: float = 0.0
    """gradient-norm clipping (0: none)"""
    max_logit_scale: float = 0.0  # clamp exp(logit_scale) to this (OpenAI pretraining: 100); 0: no clamp


@dataclass
class RetrievalTrainConfig:
    """Task, run identity, trainer and outputs."""

    task: str = "grammar"  # grammar: negative-text fine-tuning; pretrain: a CLIP from scratch (FineShapes)
    id: str = ""
    """run name: names checkpoints and exports (required)"""
    checkpoint_dir: Optional[str] = None  # None: retrieval/save/<id>
    resume: Optional[str] = None  # PATH or auto (<checkpoint_dir>/<id>-last.ckpt if present)
    overwrite: bool = False  # start run <id> again, deleting its checkpoints
    save_every_n_steps: int = 0  # also write <id>-last.ckpt every N optimiser steps (0: epoch ends only)
    init_from: Optional[str] = None  # weights only (one of our checkpoints); also what --evaluate evaluates
    export_path: Optional[str] = None  # None: <checkpoint_dir>/<id>.pt
    export_fp16: bool = False
    """export the CLIP in fp16"""
    epochs: int = 30
    """epochs to train"""
    seed: int = 9595
    """random seed"""
    precision: str = "32"
    """32, 16 (CUDA mixed) or bf16"""
    accelerator: str = "auto"
    """auto, cpu or gpu"""
    devices: str = "auto"
    """auto or the number of devices"""
    num_nodes: int = 1
    """machines"""
    strategy: str = "auto"
    """Lightning strategy, e.g. ddp"""
    losses_log_every: int = 25
    """log the losses every this many steps"""
    loggers: list[str] = field(default_factory=lambda: ["csv"])  # any of csv, tensorboard, wandb
    wandb_project: str = "clip-caption-reward-retrieval"  # loggers: [wandb]; the run name is --id
    wandb_entity: Optional[str] = None  # loggers: [wandb]; None: your default entity
    val_every_epochs: int = 1
    """validate every this many epochs"""
    eval_resolutions: str = ""  # pretrain evaluation: also probe these input sizes, e.g. "96,128,192"


@dataclass
class RetrievalLegacyConfig:
    """The original's ``param.py`` keys that it defines but never uses; accepted, no effect."""

    tokenizer: str = "openai/clip-vit-base-patch32"
    """no effect (the original's Hugging Face tokenizer name)"""
    max_text_length: int = 40
    """no effect (the original's option)"""
    gradient_accumulation_steps: int = 1
    """no effect (the original's option)"""
    train_topk: int = -1
    """no effect (the original's option)"""
    valid_topk: int = -1
    """no effect (the original's option)"""
    fp16: bool = False
    """no effect (use precision)"""


@dataclass
class RetrievalConfig(FlatConfig):
    """The configuration of ``retrieval/train_pl.py``."""

    UNSUPPORTED: ClassVar[dict[str, str]] = {
        "load_feat": "grammar fine-tuning reads precomputed image embeddings (or embeds images_root itself); "
                     "the original's raw-image path is not implemented",
    }

    data: RetrievalDataConfig = field(default_factory=RetrievalDataConfig)
    model: RetrievalModelConfig = field(default_factory=RetrievalModelConfig)
    optim: RetrievalOptimConfig = field(default_factory=RetrievalOptimConfig)
    train: RetrievalTrainConfig = field(default_factory=RetrievalTrainConfig)
    legacy: RetrievalLegacyConfig = field(default_factory=RetrievalLegacyConfig)


def config_path(cfg: str) -> str:
    """``--cfg`` value: a file path, or a bare name of ``retrieval/configs/<name>.yaml`` (as the original)."""
    if Path(cfg).is_file() or "/" in cfg or cfg.endswith((".yaml", ".yml")):
        return cfg
    return str(CONFIG_DIR / f"{cfg}.yaml")


def validate(cfg: RetrievalConfig) -> None:
    """Reject inconsistent settings with one clear message."""
    t, d, m, o = cfg.train, cfg.data, cfg.model, cfg.optim
    check_loggers(t.loggers)
    if t.task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {t.task!r}")
    if o.optim != "adamw":
        raise ValueError(f"optim {o.optim!r} is not supported; use 'adamw'")
    if o.weight_decay_rule not in ("original", "standard"):
        raise ValueError(f"weight_decay_rule must be 'original' or 'standard', got {o.weight_decay_rule!r}")
    if o.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {o.lr_schedule!r}")
    if t.task == "grammar":
        if m.joint_out and m.use_grammar:
            raise ValueError("joint_out and use_grammar exclude each other (the original has no head with joint_out)")
        if not m.clip_model:
            raise ValueError("grammar fine-tuning needs clip_model (an OpenAI name or a CLIP file)")
        if d.input_clipscore_vis_dir is None and d.images_root is None:
            raise ValueError("give input_clipscore_vis_dir (precomputed embeddings) or images_root (embed in-process)")
    else:
        if d.images_root is None or d.scenes_json is None:
            raise ValueError("pretraining needs images_root and scenes_json (FineShapes images and their truth)")
        for key in ("prompt_prob", "relation_twin_prob"):
            if not 0.0 <= getattr(d, key) <= 1.0:
                raise ValueError(f"{key} must be in [0, 1], got {getattr(d, key)}")
        if (d.paraphrase_weight or d.text_warmup_steps) and not d.hard_negatives:
            raise ValueError("paraphrase_weight and text_warmup_steps need hard_negatives (twins are the text-text "
                             "negatives)")
    if t.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {t.epochs}")
    if t.save_every_n_steps < 0:
        raise ValueError(f"save_every_n_steps must be >= 0 (0: only at the end of each epoch), got {t.save_every_n_steps}")
    if d.batch_size < 2:
        raise ValueError(f"batch_size must be at least 2 (in-batch negatives), got {d.batch_size}")
