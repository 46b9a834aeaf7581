"""The experiment trackers of a run (config key ``loggers``): CSV, TensorBoard and Weights & Biases.

* ``csv``: ``<folder>/logs/version_N/metrics.csv`` (what ``tools/make_report.py`` plots);
* ``tensorboard``: ``<folder>/tb/version_N``;
* ``wandb``: Lightning's ``WandbLogger`` with the run id as run name, ``wandb_project`` and
  ``wandb_entity``; its local run folder is ``<folder>/wandb/`` (``WANDB_MODE=offline`` logs
  without an account; ``wandb sync`` uploads later). Needs ``pip install wandb``.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger

from captioning.config import ConfigError

LOGGERS = ("csv", "tensorboard", "wandb")


def check_loggers(loggers: Sequence[str]) -> None:
    """A ConfigError unless ``loggers`` names at least one known tracker and nothing else."""
    if not loggers or any(name not in LOGGERS for name in loggers):
        raise ConfigError(f"loggers: {list(loggers)!r} must name at least one of {', '.join(LOGGERS)}")


def build_loggers(run_id: str, folder: str | Path, loggers: Sequence[str], wandb_project: str | None = None,
                  wandb_entity: str | None = None) -> list[Logger]:
    """The Lightning loggers named in ``loggers``, writing under ``folder``; unknown names are a ConfigError."""
    check_loggers(loggers)
    out: list[Logger] = []
    for name in dict.fromkeys(loggers):
        if name == "csv":
            out.append(CSVLogger(save_dir=str(folder), name="logs"))
        elif name == "tensorboard":
            out.append(TensorBoardLogger(save_dir=str(folder), name="tb"))
        else:
            try:
                import wandb  # noqa: F401  (WandbLogger fails later and less clearly without it)
                from pytorch_lightning.loggers import WandbLogger
            except ImportError:
                raise ConfigError("loggers: wandb needs the wandb package (pip install wandb)") from None
            Path(folder).mkdir(parents=True, exist_ok=True)
            out.append(WandbLogger(name=run_id, project=wandb_project, entity=wandb_entity, save_dir=str(folder)))
    return out
