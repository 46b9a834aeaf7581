"""Train or evaluate a retrieval CLIP (``retrieval/train_pl.py``, run from the repository root).

    python retrieval/train_pl.py --cfg clip_negative_text --id clip_negative_text
    python retrieval/train_pl.py --cfg retrieval/configs/fineshapes_clip.yaml --id fineshapes_clip
    EVALUATE=1 python retrieval/train_pl.py --cfg fineshapes_clip --id fineshapes_clip

``--cfg`` takes a file or a bare name from ``retrieval/configs/``. Two tasks (config key ``task``):

* ``grammar`` (docs/ORIGINAL.md §6): fine-tune a CLIP's text side with perturbed negative captions and
  train the grammar head. Writes ``<checkpoint_dir>/<id>-{best,last}.ckpt`` (best = lowest
  ``val/loss``) and, from the best, the grammar-CLIP file ``export_path`` (default
  ``<checkpoint_dir>/<id>.pt``) that the CLIP-S + grammar reward loads.
* ``pretrain`` (FineShapes): train a CLIP from scratch, export its last weights as an OpenAI-layout
  state dict (``export_path``, fp16 with ``export_fp16``) and evaluate it on the test split
  (``<checkpoint_dir>/<id>_eval_test.json``, see :mod:`retrieval.evaluate`).

Checkpoints, resume and run ids follow :mod:`captioning.training.runs`, as in the captioning
trainer: ``<id>-last.ckpt`` is the latest epoch (or step checkpoint), ``<id>-best.ckpt`` the best;
a resumed run equals one that never stopped; a second run of an existing id needs ``--resume`` or
``--overwrite``, and a concurrent one fails on ``<id>.lock``.

Starting points are explicit and a missing file is always an error: ``--resume PATH|auto``
continues a run (``auto``: ``<id>-last.ckpt`` if present); ``--evaluate`` (or ``EVALUATE=1``)
evaluates ``--init_from PATH``, else the best checkpoint (grammar) or the last (pretrain), on the
test split. The resolved config is written to ``<checkpoint_dir>/<id>.yml``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

import clip
from captioning.cli import entry_point
from captioning.config import ConfigError, parse_args, save_config
from captioning.data.features import open_features
from captioning.data.prepro import read_vocab
from captioning.fineshapes.dataset import load_scenes
from captioning.training.runs import (
    RunLock,
    build_run_trainer,
    check_resume_epochs,
    claim_run_id,
    evaluate_requested,
    is_launcher_child,
    resolve_resume,
)
from captioning.utils.io import write_json
from clip.grammar import load_grammar_clip
from retrieval.config import RetrievalConfig, config_path, validate
from retrieval.data import GrammarDataset, PretrainDataset, RetrievalDataModule, load_images, read_karpathy
from retrieval.evaluate import evaluate_fineshapes_clip, format_report, image_features
from retrieval.export import export_clip, save_grammar_clip
from retrieval.module import GrammarModule, PretrainModule
from retrieval.perturb import vocabulary


def checkpoint_dir(cfg: RetrievalConfig) -> Path:
    return Path(cfg.train.checkpoint_dir or Path("retrieval/save") / cfg.train.id)


def export_path(cfg: RetrievalConfig) -> Path:
    return Path(cfg.train.export_path or checkpoint_dir(cfg) / f"{cfg.train.id}.pt")


def build_trainer(cfg: RetrievalConfig, ckpt_dir: Path) -> pl.Trainer:
    """The Lightning trainer of a run (:func:`build_run_trainer`; best = lowest ``val/loss``)."""
    t = cfg.train
    return build_run_trainer(t, ckpt_dir, "val/loss", "min", max_epochs=t.epochs,
                             gradient_clip_val=cfg.optim.clip_grad_norm or None,
                             check_val_every_n_epoch=t.val_every_epochs)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def image_embeddings(cfg: RetrievalConfig, model: clip.CLIP) -> Any:
    """The CLIP-S image embeddings by image id: read from ``input_clipscore_vis_dir`` (a folder or
    packed file), or computed here from ``images_root`` with ``model`` (its own preprocessing)."""
    d = cfg.data
    if d.input_clipscore_vis_dir is not None:
        store = open_features(d.input_clipscore_vis_dir)
        return {k: store[k] for k in store.row} if d.data_in_memory and hasattr(store, "row") else store
    entries = [e for split in ("train", "val", "test") for e in read_karpathy(d.input_dataset_json, split)]
    print(f"[retrieval] embedding {len(entries)} images of {d.images_root} in-process "
          f"at {model.visual.input_resolution} px")
    model = model.to(_device())
    feats = []
    for start in range(0, len(entries), 512):
        chunk = entries[start:start + 512]
        images = load_images(d.images_root, [e.path for e in chunk], model.visual.input_resolution)
        feats.append(image_features(model, images.to(_device())).cpu().numpy())
    model.cpu()
    return dict(zip((str(e.image_id) for e in entries), np.concatenate(feats)))


def grammar_setup(cfg: RetrievalConfig) -> tuple[GrammarModule, RetrievalDataModule]:
    d = cfg.data
    clip_model, _ = clip.load(cfg.model.clip_model)
    features = image_embeddings(cfg, clip_model)
    vocab = vocabulary(read_vocab(d.input_json))
    datasets = {split: GrammarDataset(read_karpathy(d.input_dataset_json, split), features, vocab, cfg.train.seed,
                                      train=split == "train", use_prompt=d.use_prompt)
                for split in ("train", "val", "test")}
    module = GrammarModule(cfg.to_flat_dict(), clip_model)
    return module, RetrievalDataModule(datasets, d.batch_size, d.valid_batch_size, clip_model.context_length,
                                       d.num_workers, seed=cfg.train.seed)


def pretrain_setup(cfg: RetrievalConfig) -> tuple[PretrainModule, RetrievalDataModule]:
    d, res = cfg.data, cfg.model.image_resolution
    module = PretrainModule(cfg.to_flat_dict())
    scenes = load_scenes(d.scenes_json)
    datasets = {}
    for split in ("train", "val", "test"):
        entries = read_karpathy(d.input_dataset_json, split)
        images = load_images(d.images_root, [e.path for e in entries], res)
        datasets[split] = PretrainDataset(images, [scenes[str(e.image_id)] for e in entries], cfg.train.seed,
                                          train=split == "train", hflip=d.aug_hflip, shift=d.aug_shift,
                                          prompt_prob=d.prompt_prob, relation_twin_prob=d.relation_twin_prob,
                                          paraphrase=d.paraphrase_weight > 0 or d.text_warmup_steps > 0)
    return module, RetrievalDataModule(datasets, d.batch_size, d.valid_batch_size, cfg.model.context_length,
                                       d.num_workers, seed=cfg.train.seed)


def load_module_weights(module: pl.LightningModule, path: str | Path) -> None:
    """Load a Lightning checkpoint of ours (``model.*`` keys) or a grammar-CLIP file into ``module``."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not state or not all(k.startswith(("model.", "clip.", "grammar_head.")) for k in state):
        raise ValueError(f"{path} is neither a retrieval checkpoint nor a grammar-CLIP file")
    state = {k if k.startswith("model.") else f"model.{k}": v for k, v in state.items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path} does not fit the configured model: {e}") from None


def evaluate_pretrained(cfg: RetrievalConfig, model: clip.CLIP, ckpt_dir: Path) -> dict[str, Any]:
    d = cfg.data
    resolutions = [int(r) for r in cfg.train.eval_resolutions.split(",") if r.strip()]
    report = evaluate_fineshapes_clip(model, d.input_dataset_json, d.scenes_json, d.images_root, "test",
                                      seed=cfg.train.seed, resolutions=resolutions)
    path = ckpt_dir / f"{cfg.train.id}_eval_test.json"
    write_json(path, report, indent=1)
    print(format_report(report))
    print(f"[retrieval] evaluation written to {path}")
    return report


def evaluate_main(cfg: RetrievalConfig, ckpt_dir: Path) -> int:
    """Evaluate ``init_from``, else the best (grammar) or last (pretrain) checkpoint, on the test split.

    Pretraining evaluation takes any CLIP file :func:`load_grammar_clip` reads (e.g. the exported
    OpenAI-layout file); grammar evaluation takes a retrieval checkpoint or a grammar-CLIP file.
    """
    t = cfg.train
    default = ckpt_dir / f"{t.id}-{'best' if t.task == 'grammar' else 'last'}.ckpt"
    source = Path(t.init_from or default)
    if not source.is_file():
        print(f"error: nothing to evaluate: checkpoint {source} not found (train first, or pass --init_from)",
              file=sys.stderr)
        return 2
    print(f"[retrieval] evaluating {source} on the test split")
    if t.task == "pretrain":
        evaluate_pretrained(cfg, load_grammar_clip(source).clip, ckpt_dir)
        return 0
    module, data = grammar_setup(cfg)
    load_module_weights(module, source)
    build_trainer(cfg, ckpt_dir).test(module, datamodule=data)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run; an expected failure (config, files, id, lock, resume) ends with one ``error:`` line, exit 2."""
    return entry_point(_main)(argv)


def _main(argv: list[str] | None = None) -> int:
    argv, evaluate = evaluate_requested(list(sys.argv[1:] if argv is None else argv))
    argv = [f"--cfg={config_path(a[6:])}" if a.startswith("--cfg=") else a for a in argv]
    if "--cfg" in argv[:-1]:
        i = argv.index("--cfg") + 1
        argv[i] = config_path(argv[i])
    try:
        cfg, _ = parse_args(argv, schema=RetrievalConfig)
        validate(cfg)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t = cfg.train
    if not t.id:
        print("error: --id is required (it names the checkpoints)", file=sys.stderr)
        return 2
    inert = cfg.inert_settings()
    if inert:
        print(f"[retrieval] note: {', '.join(inert)} set but without effect (as in the original)")
    pl.seed_everything(t.seed, workers=True)
    ckpt_dir = checkpoint_dir(cfg)
    if evaluate:
        return evaluate_main(cfg, ckpt_dir)
    resume = resolve_resume(t.resume, None, ckpt_dir, t.id)
    if t.init_from and resume:
        print("error: give either --resume or --init_from, not both", file=sys.stderr)
        return 2
    if t.overwrite and resume:
        print("error: --overwrite starts the run again from scratch; it cannot be combined with --resume",
              file=sys.stderr)
        return 2
    if resume:
        check_resume_epochs(resume, t.epochs)
    if is_launcher_child():
        return _train(cfg, ckpt_dir, resume)
    with RunLock(ckpt_dir, t.id):
        claim_run_id(ckpt_dir, t.id, resuming=resume is not None, overwrite=t.overwrite)
        return _train(cfg, ckpt_dir, resume)


def _train(cfg: RetrievalConfig, ckpt_dir: Path, resume: str | None) -> int:
    t = cfg.train
    module, data = grammar_setup(cfg) if t.task == "grammar" else pretrain_setup(cfg)
    trainer = build_trainer(cfg, ckpt_dir)
    if t.init_from:
        load_module_weights(module, t.init_from)
        print(f"[retrieval] initialised weights from {t.init_from}")
    if trainer.is_global_zero:
        save_config(cfg, ckpt_dir / f"{t.id}.yml")
    trainer.fit(module, datamodule=data, ckpt_path=resume)
    if not trainer.is_global_zero:
        return 0
    if t.task == "pretrain":
        export_clip(module.model.clip, export_path(cfg), fp16=t.export_fp16)
        print(f"[retrieval] CLIP weights (OpenAI layout) written to {export_path(cfg)}")
        evaluate_pretrained(cfg, load_grammar_clip(export_path(cfg)).clip, ckpt_dir)
    else:
        best = trainer.checkpoint_callback.best_model_path
        if best:
            load_module_weights(module, best)
        save_grammar_clip(module.model.cpu(), export_path(cfg))
        print(f"[retrieval] grammar CLIP ({Path(best).name if best else 'last weights'}) written to {export_path(cfg)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
