"""What a training run owns on disk, how it starts, stops and resumes, and the ``pl.Trainer`` it runs
under (:func:`build_run_trainer`); both trainers use this.

Files of run ``<id>`` in its checkpoint folder:

* ``<id>-last.ckpt``: the state at the end of the most recent epoch, or at the most recent step
  checkpoint (``save_every_n_steps``), whichever came later. It is what ``--resume auto``,
  ``--start_from DIR`` and, by default, evaluation read.
* ``<id>-best.ckpt``: the state at the end of the best epoch by the monitored metric.
* ``<id>.lock``: exists while a run trains; it holds the process id.

Both checkpoints are written atomically (:class:`AtomicCheckpointIO`) and always under these
names (never ``-v1`` copies). Besides Lightning's trainer state they carry, under this module's
callback, every random number generator's state and the position in the epoch, so that a run
resumed from ``-last`` continues exactly as if it had never stopped (with data in the order of
:class:`captioning.data.sampler.EpochSampler`).
"""
from __future__ import annotations

import os
import random
import socket
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint, LearningRateMonitor, ModelCheckpoint

from captioning.cli import InputError
from captioning.training.checkpoint_io import AtomicCheckpointIO
from captioning.training.loggers import build_loggers
from clip.pretrained import torch_load

# One run per id is enforced by claim_run_id, so Lightning's warning about files in the folder (ours:
# the lock, the config, a resumed run's checkpoints) says nothing.
warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
# Lightning's all_gather (through which both trainers gather evaluation results across processes)
# calls a torch function that torch marks deprecated: nothing for a run to act on.
warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated",
                        category=FutureWarning)


class RunError(InputError):
    """A run cannot start as asked (an existing id, a lock held, a checkpoint that does not fit)."""


# ---------------------------------------------------------------------------- random states

def rng_state() -> dict[str, Any]:
    """The state of Python's, NumPy's and torch's (CPU and CUDA) global generators, as plain data
    that ``torch.load(weights_only=True)`` reads."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------- checkpoints

class RunCheckpoints(Checkpoint):
    """Writes ``<id>-last.ckpt`` at the end of every epoch and, with ``every_n_steps``, after every
    that many optimiser steps; keeps the generator states and the epoch position in it.

    On restore it hands the position to the data module (``datamodule.resume(epoch, batches)``)
    and puts the generators back when training starts, so that the next batch, its dropout
    masks and its samples are those an uninterrupted run would have used.
    """

    def __init__(self, dirpath: str | Path, run_id: str, every_n_steps: int = 0):
        if every_n_steps < 0:
            raise ValueError(f"save_every_n_steps must be >= 0, got {every_n_steps}")
        self.dirpath, self.run_id, self.every_n_steps = Path(dirpath), run_id, every_n_steps
        self._position: dict[str, Any] = {"epoch": 0, "batches_done": 0, "epoch_finished": False}
        self._pending_rng: dict[str, Any] | None = None
        self._last_step_saved = -1

    @property
    def last_path(self) -> Path:
        return self.dirpath / f"{self.run_id}-last.ckpt"

    @property
    def state_key(self) -> str:
        return "RunCheckpoints"

    def _save_last(self, trainer: pl.Trainer, epoch_finished: bool, batches_done: int) -> None:
        self._position = {"epoch": trainer.current_epoch, "batches_done": batches_done,
                          "epoch_finished": epoch_finished}
        trainer.save_checkpoint(self.last_path, weights_only=False)
        self._last_step_saved = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps and step and step % self.every_n_steps == 0 and step != self._last_step_saved:
            self._save_last(trainer, epoch_finished=False, batches_done=batch_idx + 1)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._save_last(trainer, epoch_finished=True, batches_done=trainer.num_training_batches)

    def state_dict(self) -> dict[str, Any]:
        return {"position": dict(self._position), "rng": rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._position = dict(state_dict["position"])
        self._pending_rng = state_dict["rng"]

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending_rng is None:
            return
        pos, datamodule = self._position, trainer.datamodule
        epoch, done = (pos["epoch"] + 1, 0) if pos["epoch_finished"] else (pos["epoch"], pos["batches_done"])
        if done and not hasattr(datamodule, "resume"):
            raise RunError("this checkpoint was written mid-epoch, but the data module cannot resume mid-epoch")
        if hasattr(datamodule, "resume"):
            datamodule.resume(epoch, done)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng)
            self._pending_rng = None


def best_checkpoint(dirpath: str | Path, run_id: str, monitor: str, mode: str) -> ModelCheckpoint:
    """``<id>-best.ckpt``: the best epoch by ``monitor``, rewritten in place (no ``-vN`` files)."""
    return ModelCheckpoint(dirpath=dirpath, filename=f"{run_id}-best", monitor=monitor, mode=mode, save_top_k=1,
                           save_last=False, auto_insert_metric_name=False, enable_version_counter=False)


def checkpoint_callbacks(dirpath: str | Path, run_id: str, monitor: str, mode: str,
                         every_n_steps: int = 0) -> list[Checkpoint]:
    """The two checkpoint callbacks of a run (best first, so ``-last`` records the best's state)."""
    return [best_checkpoint(dirpath, run_id, monitor, mode), RunCheckpoints(dirpath, run_id, every_n_steps)]


def finished_epochs(path: str | Path) -> int:
    """How many whole epochs the checkpoint at ``path`` has trained."""
    ckpt = torch_load(path)
    if not isinstance(ckpt, dict):
        raise RunError(f"{path} is not a training checkpoint (no trainer state to resume)")
    state = (ckpt.get("callbacks") or {}).get("RunCheckpoints")
    if state is None:               # written by plain Lightning: saved at the end of epoch `epoch`
        return int(ckpt.get("epoch", -1)) + 1
    pos = state["position"]
    return pos["epoch"] + 1 if pos["epoch_finished"] else pos["epoch"]


# ---------------------------------------------------------------------------- starting a run

def evaluate_requested(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--evaluate``, and whether evaluation was asked for (``--evaluate`` or the
    original's ``EVALUATE=1``)."""
    evaluate = os.environ.get("EVALUATE", "0") not in ("", "0")
    if "--evaluate" in argv:
        argv = [a for a in argv if a != "--evaluate"]
        evaluate = True
    return argv, evaluate


def trainer_precision(requested: str) -> str:
    """Lightning precision for the config value; 16-bit runs only on CUDA (CPU falls back to fp32)."""
    value = str(requested)
    if value in ("32", "32-true"):
        return "32-true"
    if not torch.cuda.is_available():
        print(f"[train] precision {value} needs CUDA; running in fp32 on CPU")
        return "32-true"
    return {"16": "16-mixed", "bf16": "bf16-mixed"}.get(value, value)


class RunSettings(Protocol):
    """The train-section settings every run has (captioning's ``TrainConfig`` and retrieval's
    ``RetrievalTrainConfig`` both carry them under these names)."""

    id: str
    save_every_n_steps: int
    accelerator: str
    devices: str
    num_nodes: int
    strategy: str
    precision: str
    losses_log_every: int
    loggers: list[str]
    wandb_project: str
    wandb_entity: str | None


def build_run_trainer(train: RunSettings, ckpt_dir: Path, monitor: str, mode: str, *, max_epochs: int,
                      gradient_clip_val: float | None, check_val_every_n_epoch: int,
                      callbacks: Sequence[pl.Callback] = (), **options: Any) -> pl.Trainer:
    """The Lightning trainer of a run, for both trainers.

    It owns what every run shares: the checkpoint callbacks (``-best`` by ``monitor`` and ``mode``,
    and ``-last``) and a learning-rate monitor, the configured loggers, atomic checkpoint files,
    accelerator, devices (``auto`` or a number), nodes, strategy and precision (:func:`trainer_precision`)
    from ``train``, logging every ``losses_log_every`` steps, no sanity validation and no distributed
    sampler (the data modules order and shard each epoch themselves). ``callbacks`` run before the
    checkpoint callbacks; ``options`` are the run's further ``pl.Trainer`` arguments, passed as given.
    """
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator=train.accelerator,
        devices=train.devices if train.devices == "auto" else int(train.devices),
        num_nodes=train.num_nodes,
        strategy=train.strategy,
        precision=trainer_precision(train.precision),
        gradient_clip_val=gradient_clip_val,
        log_every_n_steps=train.losses_log_every,
        callbacks=[*callbacks, *checkpoint_callbacks(ckpt_dir, train.id, monitor, mode, train.save_every_n_steps),
                   LearningRateMonitor(logging_interval="step")],
        logger=build_loggers(train.id, ckpt_dir, train.loggers, train.wandb_project, train.wandb_entity),
        plugins=[AtomicCheckpointIO()],
        num_sanity_val_steps=0,
        check_val_every_n_epoch=check_val_every_n_epoch,
        use_distributed_sampler=False,
        **options,
    )



def resolve_resume(resume: str | None, start_from: str | None, ckpt_dir: Path, run_id: str) -> str | None:
    """The checkpoint to resume from, or None for a new run.

    ``resume``: a path, or ``auto`` (``<ckpt_dir>/<id>-last.ckpt`` when it exists, else a new run).
    ``start_from``: a folder holding ``<id>-last.ckpt`` (the original's option); missing is an error.
    """
    if resume is not None and start_from is not None:
        raise RunError("give either --resume or --start_from, not both")
    if start_from is not None:
        path = Path(start_from) / f"{run_id}-last.ckpt"
        if not path.is_file():
            raise RunError(f"--start_from {start_from}: {path} not found (--start_from DIR resumes run {run_id!r} "
                           f"from DIR/{run_id}-last.ckpt; the original silently started a new run here)")
        return str(path)
    if resume is None:
        return None
    if resume == "auto":
        last = ckpt_dir / f"{run_id}-last.ckpt"
        if last.is_file():
            return str(last)
        print(f"[train] --resume auto: no {last} yet, starting a new run")
        return None
    if not Path(resume).is_file():
        raise RunError(f"--resume: checkpoint not found: {resume}")
    return resume


def check_resume_epochs(path: str, max_epochs: int) -> None:
    """A resumed run must have epochs left to train."""
    if max_epochs < 0:
        return
    done = finished_epochs(path)
    if done >= max_epochs:
        raise RunError(f"{path} has already trained {done} epoch(s) and max_epochs is {max_epochs}: resuming would "
                       "train nothing. To start a new phase from its weights use --init_from (with a new --id); "
                       "to train longer raise --max_epochs")


def run_files(ckpt_dir: Path, run_id: str) -> list[Path]:
    """The checkpoints run ``run_id`` has written (including Lightning's ``-vN`` copies of older versions)."""
    names = [f"{run_id}-last.ckpt", f"{run_id}-best.ckpt"]
    found = [ckpt_dir / n for n in names if (ckpt_dir / n).is_file()]
    return found + sorted(ckpt_dir.glob(f"{run_id}-last-v*.ckpt")) + sorted(ckpt_dir.glob(f"{run_id}-best-v*.ckpt"))


def claim_run_id(ckpt_dir: Path, run_id: str, resuming: bool, overwrite: bool) -> None:
    """Refuse to start a second run under an id that has checkpoints, unless resuming or ``overwrite``
    (which deletes them first)."""
    existing = run_files(ckpt_dir, run_id)
    if not existing or resuming:
        return
    if not overwrite:
        raise RunError(f"run {run_id!r} already has checkpoints in {ckpt_dir} ({', '.join(p.name for p in existing)}); "
                       "use --resume auto to continue it or --overwrite to start again")
    for path in existing:
        path.unlink()
    print(f"[train] --overwrite: removed {', '.join(p.name for p in existing)} of run {run_id!r}")


def is_launcher_child() -> bool:
    """True in the processes a multi-process strategy starts for ranks other than this node's first."""
    return int(os.environ.get("LOCAL_RANK", "0")) > 0 or int(os.environ.get("NODE_RANK", "0")) > 0


class RunLock:
    """``<dir>/<id>.lock`` held for the duration of a run: a second run of the same id fails at once,
    naming the holder; a lock left by a process that no longer exists is taken over with a message."""

    def __init__(self, ckpt_dir: Path, run_id: str):
        self.path = Path(ckpt_dir) / f"{run_id}.lock"
        self.run_id = run_id
        self._held = False

    def _holder(self) -> tuple[int, str] | None:
        try:
            pid_text, _, host = self.path.read_text().partition(" ")
            return int(pid_text), host.strip()
        except (OSError, ValueError):
            return None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and _alive(*holder):
                    raise RunError(f"run {self.run_id!r} is already in progress (pid {holder[0]} on {holder[1]}, "
                                   f"lock {self.path}); wait for it or use another --id") from None
                who = f"pid {holder[0]}" if holder else "an unreadable lock"
                print(f"[train] taking over the stale lock {self.path} ({who} is no longer running)", file=sys.stderr)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {socket.gethostname()}\n")
            self._held = True
            return
        raise RunError(f"could not take the lock {self.path}; another run of {self.run_id!r} is starting")

    def release(self) -> None:
        if self._held:
            holder = self._holder()
            if holder is not None and holder[0] == os.getpid():
                self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _alive(pid: int, host: str) -> bool:
    if host and host != socket.gethostname():
        return True                    # another machine's process: assume it runs
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
