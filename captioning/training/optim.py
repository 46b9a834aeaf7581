"""Optimisers and learning-rate schedules (docs/ORIGINAL.md §4.2)."""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from captioning.config import Config


def noam_rate(step: int, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """NoamOpt: factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), step counted from 1."""
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def step_decay(epoch: int, start: int, every: int, rate: float) -> float:
    """The original's per-epoch decay factor: rate^floor((epoch - start) / every) once epoch > start >= 0."""
    if start < 0 or epoch <= start:
        return 1.0
    return rate ** math.floor((epoch - start) / every)


def carry_state(opt: torch.optim.Optimizer, state: dict) -> None:
    """Load another run's optimiser state (moments, step counts and each group's betas / eps /
    weight decay, as a Lightning resume did in the original's phase 2), keeping this run's lr."""
    lrs = [group["lr"] for group in opt.param_groups]
    try:
        opt.load_state_dict(state)
    except ValueError as e:
        raise ValueError(f"the carried optimiser state does not fit this model: {e}") from None
    for group, lr in zip(opt.param_groups, lrs):
        group["lr"] = lr
        group.pop("initial_lr", None)  # the old schedule's base lr; this run's scheduler sets its own


def build_optimizer(cfg: Config, params: Iterable[nn.Parameter], initial_state: dict | None = None) -> dict:
    """The optimiser and scheduler in Lightning's ``configure_optimizers`` form.

    Under NoamOpt the configured ``learning_rate`` is ignored (as in the original): Adam runs with
    betas (0.9, 0.98), eps 1e-9 and the Noam schedule, stepped every optimiser step.
    Otherwise Adam with (optim_alpha, optim_beta, optim_epsilon) and the step decay per epoch.
    ``initial_state`` (``keep_mle_optimizer_state``) is an Adam state dict to carry over
    (see :func:`carry_state`).
    """
    o = cfg.optim
    if o.optim != "adam":
        raise ValueError(f"optim {o.optim!r} is not supported; use 'adam'")
    if o.noamopt:
        opt = torch.optim.Adam(params, lr=1.0, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.0)
        if initial_state is not None:
            carry_state(opt, initial_state)
        d_model, warmup, factor = cfg.model.d_model, o.noamopt_warmup, o.noamopt_factor
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: noam_rate(k + 1, d_model, warmup, factor))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
    if o.reduce_on_plateau or o.use_warmup:
        raise ValueError("reduce_on_plateau and use_warmup are not implemented (no original config uses them)")
    opt = torch.optim.Adam(params, lr=o.learning_rate, betas=(o.optim_alpha, o.optim_beta), eps=o.optim_epsilon,
                           weight_decay=o.weight_decay)
    if initial_state is not None:
        carry_state(opt, initial_state)
    start, every, rate = o.learning_rate_decay_start, o.learning_rate_decay_every, o.learning_rate_decay_rate
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: step_decay(epoch, start, every, rate))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
