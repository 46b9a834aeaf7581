"""Train or evaluate the captioner (``tools/train_pl.py``).

    python tools/train_pl.py --cfg configs/phase1/clipRN50_mle.yml --id clipRN50_mle
    EVALUATE=1 python tools/train_pl.py --cfg configs/phase1/clipRN50_mle.yml --id clipRN50_mle

Any config key can be overridden (``--batch_size 100``, ``--set_cfgs k v ...``). Starting points
are explicit and a missing checkpoint is always an error:

* ``--resume PATH|auto`` continues a run with its full trainer state (epoch, step, optimiser,
  every random generator and the position in the epoch): the result equals a run that never
  stopped. ``auto`` takes ``<checkpoint dir>/<id>-last.ckpt`` if it exists and starts a new run
  otherwise. A checkpoint that has already trained ``max_epochs`` epochs is refused (use
  ``--init_from`` for a new phase).
* ``--start_from DIR`` (the original's option) resumes from ``DIR/<id>-last.ckpt``; a missing
  file is an error (the original silently started a new run).
* ``--init_from PATH`` loads model weights only (e.g. phase 2 from the MLE checkpoint); the
  epoch count starts at 0 and the optimiser is fresh, unless ``keep_mle_optimizer_state``
  carries over the checkpoint's Adam state (moments, step counts, and its betas / eps: from a
  NoamOpt MLE run (0.9, 0.98) and 1e-9, as the original's phase 2 inherited); the lr is this
  run's ``learning_rate`` either way.
* ``--evaluate`` (or the original's ``EVALUATE=1``) tests a checkpoint on the test split:
  ``--init_from``/``--resume`` if given, else ``<checkpoint dir>/<id>-last.ckpt``.

One run per id: a new run under an id that already has checkpoints is refused unless it is
resumed (``--resume``/``--start_from``) or ``--overwrite`` deletes them; ``<id>.lock`` makes a
second, concurrent run of the same id fail at once.

Self-critical training (SCST) runs in every epoch >= ``self_critical_after`` (-1: never):

* phase 2 from an MLE checkpoint, N RL epochs (what the phase-2 configs do):
  ``--init_from save/<mle_id>/<mle_id>-last.ckpt`` with ``self_critical_after: 0`` and
  ``max_epochs: N``. (The original resumed the MLE trainer state instead: epochs 25..39 of
  ``max_epochs: 40`` with ``self_critical_after: 15``, i.e. N = 15.)
* MLE then SCST in one run: ``self_critical_after: M``, ``max_epochs: M + N``.

SCST from epoch 0 without ``--init_from`` or ``--resume`` would train a random model with
rewards, and is an error.

Files (see :mod:`captioning.training.runs`): ``<checkpoint_path>/<id>-last.ckpt`` (end of the
latest epoch, or the latest step checkpoint with ``save_every_n_steps``), ``<id>-best.ckpt`` (best
``val/CIDEr``, or ``val/loss`` without language evaluation), the resolved config ``<id>.yml``;
results in ``eval_results/<id>_<split>.json``.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from captioning.cli import entry_point
from captioning.config import Config, ConfigError, parse_args, save_config
from captioning.data.dataset import CaptionDataModule, data_paths_from_config
from captioning.data.prepro import read_vocab
from captioning.training.caption_eval import CaptionEvaluation
from captioning.training.module import CaptionerModule, load_weights
from captioning.training.preflight import check_inputs
from captioning.training.runs import (
    RunLock,
    build_run_trainer,
    check_resume_epochs,
    claim_run_id,
    evaluate_requested,
    is_launcher_child,
    resolve_resume,
)


def checkpoint_dir(cfg: Config) -> Path:
    return Path(cfg.train.checkpoint_path or Path("save") / cfg.train.id)


def build_trainer(cfg: Config, ckpt_dir: Path, monitor: str, mode: str) -> pl.Trainer:
    """The Lightning trainer of a run (:func:`build_run_trainer`, with caption evaluation); data
    comes in the order of :class:`EpochSampler` (the data module shards it per process itself)."""
    t = cfg.train
    evaluation = CaptionEvaluation(t.id, t.val_split, bool(t.language_eval), cfg.data.input_ref_json)
    return build_run_trainer(
        t, ckpt_dir, monitor, mode,
        max_epochs=t.max_epochs,
        gradient_clip_val=cfg.optim.grad_clip_value or None,
        check_val_every_n_epoch=1,
        callbacks=[evaluation],
        limit_train_batches=t.limit_train_batches if t.limit_train_batches > 0 else None,
        limit_val_batches=t.limit_val_batches if t.limit_val_batches > 0 else None,
        val_check_interval=t.val_check_interval or None,
        gradient_clip_algorithm={"norm": "norm", "value": "value"}[cfg.optim.grad_clip_mode],
        accumulate_grad_batches=t.accumulate_grad_batches,
    )


def check_trainer_limits(cfg: Config) -> str | None:
    """An error message for an out-of-range trainer setting, else None."""
    t = cfg.train
    if t.max_epochs == 0 or t.max_epochs < -1:
        return f"max_epochs must be >= 1 (or -1: no limit), got {t.max_epochs}"
    if t.limit_train_batches == 0 or t.limit_train_batches < -1:
        return f"limit_train_batches must be >= 1 (or -1: every batch), got {t.limit_train_batches}"
    if t.limit_val_batches == 0 or t.limit_val_batches < -1:
        return f"limit_val_batches must be >= 1 (or -1: every batch), got {t.limit_val_batches}"
    if t.val_check_interval < 0:
        return f"val_check_interval must be >= 0 (0: at epoch ends only), got {t.val_check_interval}"
    if 0 < t.limit_train_batches < t.val_check_interval:
        return (f"val_check_interval ({t.val_check_interval}) must be <= limit_train_batches "
                f"({t.limit_train_batches}), or 0")
    if t.save_every_n_steps < 0:
        return f"save_every_n_steps must be >= 0 (0: only at the end of each epoch), got {t.save_every_n_steps}"
    if t.losses_log_every < 1:
        return f"losses_log_every must be >= 1, got {t.losses_log_every}"
    return None


def build_data(cfg: Config) -> CaptionDataModule:
    """The data module; it loads the CLIP-S image embeddings for the CLIP-S reward or ``eval_clipscore``."""
    with_clip = cfg.reward.use_clipscore or cfg.train.eval_clipscore
    paths = dataclasses.replace(data_paths_from_config(cfg),
                                input_clipscore_vis_dir=cfg.data.input_clipscore_vis_dir if with_clip else None)
    return CaptionDataModule(paths, cfg.data.batch_size, cfg.data.seq_per_img, with_clip, cfg.data.num_workers,
                             bool(cfg.data.train_only), att_feat_size=cfg.model.att_feat_size, seed=cfg.train.seed,
                             norm_att_feat=bool(cfg.data.norm_att_feat))


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
        return "give either --resume/--start_from or --init_from, not both"
    if cfg.train.overwrite and resume:
        return "--overwrite starts run again from scratch; it cannot be combined with --resume/--start_from"
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
    return entry_point(_main)(argv)


def _main(argv: list[str] | None = None) -> int:
    argv, evaluate = evaluate_requested(list(sys.argv[1:] if argv is None else argv))
    try:
        cfg, _ = parse_args(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not cfg.train.id:
        print("error: --id is required (it names the checkpoints and result files)", file=sys.stderr)
        return 2
    problem = check_trainer_limits(cfg)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    inert = cfg.inert_settings()
    if inert:
        print(f"[train_pl] note: {', '.join(inert)} set but without effect on the transformer captioner "
              "(as in the original)")
    pl.seed_everything(cfg.train.seed, workers=True)
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    ckpt_dir = checkpoint_dir(cfg)
    problem = check_writable(ckpt_dir, Path("eval_results"))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    check_inputs(cfg, evaluate, ckpt_dir / f"{cfg.train.id}-last.ckpt")
    vocab = read_vocab(cfg.data.input_json)
    module = CaptionerModule(cfg.to_flat_dict(), vocab)
    data = build_data(cfg)
    monitor, mode = ("val/CIDEr", "max") if cfg.train.language_eval else ("val/loss", "min")
    trainer = build_trainer(cfg, ckpt_dir, monitor, mode)

    if evaluate:
        source = cfg.train.init_from or resolve_resume(cfg.train.resume, cfg.train.start_from, ckpt_dir,
                                                       cfg.train.id) or str(ckpt_dir / f"{cfg.train.id}-last.ckpt")
        if not Path(source).is_file():
            print(f"error: nothing to evaluate: checkpoint {source} not found (train first, or pass --init_from)",
                  file=sys.stderr)
            return 2
        load_weights(module, source)
        print(f"[train_pl] evaluating {source} on the test split")
        trainer.test(module, datamodule=data)
        return 0

    resume = resolve_resume(cfg.train.resume, cfg.train.start_from, ckpt_dir, cfg.train.id)
    problem = check_start(cfg, resume)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if resume:
        check_resume_epochs(resume, cfg.train.max_epochs)
    if is_launcher_child():
        return _fit(cfg, module, data, trainer, ckpt_dir, resume)
    with RunLock(ckpt_dir, cfg.train.id):
        claim_run_id(ckpt_dir, cfg.train.id, resuming=resume is not None, overwrite=cfg.train.overwrite)
        return _fit(cfg, module, data, trainer, ckpt_dir, resume)


def _fit(cfg: Config, module: CaptionerModule, data: CaptionDataModule, trainer: pl.Trainer, ckpt_dir: Path,
         resume: str | None) -> int:
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
