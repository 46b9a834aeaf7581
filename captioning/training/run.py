"""Train or evaluate the captioner (``tools/train_pl.py``).

    python tools/train_pl.py --cfg configs/phase1/clipRN50_mle.yml --id clipRN50_mle
    EVALUATE=1 python tools/train_pl.py --cfg configs/phase1/clipRN50_mle.yml --id clipRN50_mle

Any config key can be overridden (``--batch_size 100``, ``--set_cfgs k v ...``). Starting points
are explicit and a missing checkpoint is always an error:

* ``--resume PATH|auto`` continues a run with its full trainer state (epoch, step, optimiser);
  ``auto`` takes ``<checkpoint dir>/<id>-last.ckpt`` if it exists and starts fresh otherwise.
* ``--init_from PATH`` loads model weights only (e.g. phase 2 from the MLE checkpoint); the
  epoch count starts at 0 and the optimiser is fresh, unless ``keep_mle_optimizer_state``
  carries over the checkpoint's Adam state (moments, step counts, and its betas / eps: from a
  NoamOpt MLE run (0.9, 0.98) and 1e-9, as the original's phase 2 inherited); the lr is this
  run's ``learning_rate`` either way.
* ``--evaluate`` (or the original's ``EVALUATE=1``) tests a checkpoint on the test split:
  ``--init_from``/``--resume`` if given, else ``<checkpoint dir>/<id>-last.ckpt``.

Self-critical training (SCST) runs in every epoch >= ``self_critical_after`` (-1: never):

* phase 2 from an MLE checkpoint, N RL epochs (what the phase-2 configs do):
  ``--init_from save/<mle_id>/<mle_id>-last.ckpt`` with ``self_critical_after: 0`` and
  ``max_epochs: N``. (The original resumed the MLE trainer state instead: epochs 25..39 of
  ``max_epochs: 40`` with ``self_critical_after: 15``, i.e. N = 15.)
* MLE then SCST in one run: ``self_critical_after: M``, ``max_epochs: M + N``.

SCST from epoch 0 without ``--init_from`` or ``--resume`` would train a random model with
rewards, and is an error.

Checkpoints go to ``<checkpoint_path>/<id>-last.ckpt`` and ``<id>-best.ckpt`` (best
``val/CIDEr``, or ``val/loss`` without language evaluation), with the resolved config
``<id>.yml``; results to ``eval_results/<id>_<split>.json``.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from captioning.config import Config, ConfigError, parse_args, save_config
from captioning.data.dataset import CaptionDataModule, DatasetError, data_paths_from_config
from captioning.data.features import FeatureError
from captioning.training.checkpoint_io import AtomicCheckpointIO
from captioning.training.module import CaptionerModule, CheckpointError, load_weights, read_vocab


def checkpoint_dir(cfg: Config) -> Path:
    return Path(cfg.train.checkpoint_path or Path("save") / cfg.train.id)


def trainer_precision(requested: str) -> str:
    """Lightning precision for the config value; 16-bit runs only on CUDA (CPU falls back to fp32)."""
    value = str(requested)
    if value in ("32", "32-true"):
        return "32-true"
    if not torch.cuda.is_available():
        print(f"[train_pl] precision {value} needs CUDA; running in fp32 on CPU")
        return "32-true"
    return {"16": "16-mixed", "bf16": "bf16-mixed"}.get(value, value)


def build_trainer(cfg: Config, ckpt_dir: Path, monitor: str, mode: str) -> pl.Trainer:
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename=f"{cfg.train.id}-best", monitor=monitor, mode=mode,
                                 save_top_k=1, save_last=True, auto_insert_metric_name=False)
    checkpoint.CHECKPOINT_NAME_LAST = f"{cfg.train.id}-last"
    devices = cfg.train.devices if cfg.train.devices == "auto" else int(cfg.train.devices)
    clip_algorithm = {"norm": "norm", "value": "value"}[cfg.optim.grad_clip_mode]
    return pl.Trainer(
        max_epochs=cfg.train.max_epochs,
        limit_train_batches=cfg.train.limit_train_batches if cfg.train.limit_train_batches > 0 else None,
        accelerator=cfg.train.accelerator,
        devices=devices,
        num_nodes=cfg.train.num_nodes,
        strategy=cfg.train.strategy,
        precision=trainer_precision(cfg.train.precision),
        gradient_clip_val=cfg.optim.grad_clip_value or None,
        gradient_clip_algorithm=clip_algorithm,
        accumulate_grad_batches=cfg.train.gradient_accumulation(),
        log_every_n_steps=cfg.train.losses_log_every,
        callbacks=[checkpoint, LearningRateMonitor(logging_interval="step")],
        logger=[CSVLogger(save_dir=str(ckpt_dir), name="logs"), TensorBoardLogger(save_dir=str(ckpt_dir), name="tb")],
        plugins=[AtomicCheckpointIO()],
        num_sanity_val_steps=0,
        check_val_every_n_epoch=1,
    )


def resolve_resume(value: str | None, ckpt_dir: Path, run_id: str) -> str | None:
    if value is None:
        return None
    if value == "auto":
        last = ckpt_dir / f"{run_id}-last.ckpt"
        if last.is_file():
            return str(last)
        print(f"[train_pl] --resume auto: no {last} yet, starting a new run")
        return None
    if not Path(value).is_file():
        raise FileNotFoundError(f"--resume: checkpoint not found: {value}")
    return value


def build_data(cfg: Config) -> CaptionDataModule:
    """The data module; it loads the CLIP-S image embeddings for the CLIP-S reward or ``eval_clipscore``."""
    with_clip = cfg.reward.use_clipscore or cfg.train.eval_clipscore
    paths = dataclasses.replace(data_paths_from_config(cfg),
                                input_clipscore_vis_dir=cfg.data.input_clipscore_vis_dir if with_clip else None)
    return CaptionDataModule(paths, cfg.data.batch_size, cfg.data.seq_per_img, with_clip, cfg.data.num_workers,
                             bool(cfg.data.train_only), att_feat_size=cfg.model.att_feat_size)


def init_optimizer_state(path: str | Path) -> dict:
    """The first optimiser's state dict of a Lightning checkpoint (``keep_mle_optimizer_state``)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    states = ckpt.get("optimizer_states") or []
    if not states:
        raise ValueError(f"keep_mle_optimizer_state: {path} holds no optimizer state (a weights-only file?)")
    return states[0]


def check_start(cfg: Config, resume: str | None) -> str | None:
    """An error message for a start that cannot be what was meant, else None."""
    r, init_from = cfg.reward, cfg.train.init_from
    if init_from and resume:
        return "give either --resume or --init_from, not both"
    if r.keep_mle_optimizer_state and not init_from:
        return "keep_mle_optimizer_state needs --init_from (the checkpoint whose optimizer state to carry over)"
    if r.self_critical_after == 0 and not init_from and not resume:
        return ("self_critical_after is 0 but no weights are loaded: self-critical training would start from a "
                "random model; pass --init_from save/<mle_id>/<mle_id>-last.ckpt (or --resume)")
    return None


def check_writable(*folders: Path) -> str | None:
    """An error message when an output folder cannot be created or written, else None."""
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".write_test_{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            return f"cannot write to output folder {folder}: {e.strerror or e}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run; a bad input (config, data, features, checkpoint) ends with one ``error:`` line and exit status 2."""
    try:
        return _main(argv)
    except (ConfigError, DatasetError, FeatureError, FileNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    evaluate = os.environ.get("EVALUATE", "0") not in ("", "0")
    if "--evaluate" in argv:
        argv.remove("--evaluate")
        evaluate = True
    try:
        cfg, _ = parse_args(argv)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if not cfg.train.id:
        print("error: --id is required (it names the checkpoints and result files)", file=sys.stderr)
        return 2
    pl.seed_everything(cfg.train.seed, workers=True)
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    ckpt_dir = checkpoint_dir(cfg)
    problem = check_writable(ckpt_dir, Path("eval_results"))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    vocab = read_vocab(cfg.data.input_json)
    module = CaptionerModule(cfg.to_flat_dict(), vocab)
    data = build_data(cfg)
    monitor, mode = ("val/CIDEr", "max") if cfg.train.language_eval else ("val/loss", "min")
    trainer = build_trainer(cfg, ckpt_dir, monitor, mode)

    if evaluate:
        source = cfg.train.init_from or resolve_resume(cfg.train.resume, ckpt_dir, cfg.train.id) \
            or str(ckpt_dir / f"{cfg.train.id}-last.ckpt")
        if not Path(source).is_file():
            print(f"error: nothing to evaluate: checkpoint {source} not found (train first, or pass --init_from)",
                  file=sys.stderr)
            return 2
        load_weights(module, source)
        print(f"[train_pl] evaluating {source} on the test split")
        trainer.test(module, datamodule=data)
        return 0

    resume = resolve_resume(cfg.train.resume, ckpt_dir, cfg.train.id)
    problem = check_start(cfg, resume)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if cfg.train.init_from:
        load_weights(module, cfg.train.init_from)
        print(f"[train_pl] initialised weights from {cfg.train.init_from}")
        if cfg.reward.keep_mle_optimizer_state:
            module.initial_optimizer_state = init_optimizer_state(cfg.train.init_from)
            print("[train_pl] carrying over its optimizer state (keep_mle_optimizer_state)")
        if cfg.reward.self_critical_after > 0:
            print(f"[train_pl] note: --init_from restarts the epoch count at 0, so epochs 0.."
                  f"{cfg.reward.self_critical_after - 1} train with MLE before self-critical training; "
                  "phase 2 from an MLE checkpoint uses self_critical_after: 0")
    if trainer.is_global_zero:
        save_config(cfg, ckpt_dir / f"{cfg.train.id}.yml")
    try:
        trainer.fit(module, datamodule=data, ckpt_path=resume)
    except FloatingPointError as e:
        last = ckpt_dir / f"{cfg.train.id}-last.ckpt"
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        print(f"error: {e}. Training stopped; {kept}.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
