"""The captioning LightningModule: MLE and self-critical training, validation and test (docs/ORIGINAL.md §4).

Training is MLE until epoch ``self_critical_after`` (-1: never), self-critical (SCST) from then
on: ``train_sample_n`` captions sampled per image with dropout on, the configured reward
(``captioning.rewards``) minus a baseline (``sc_baseline``: the greedy caption decoded in eval
mode, or the mean of the image's other samples), and the loss of
``captioning.training.losses.self_critical_loss``. No MLE term is mixed in.

Validation and test decode greedily; when the batches carry CLIP-S image embeddings
(``use_clipscore`` or ``eval_clipscore``) they also score CLIP-S, RefCLIP-S (the original's and
Hessel's) against the decoded reference rows, and ``grammar_prob`` with the fine-tuned grammar
CLIP when ``use_grammar`` (docs/ORIGINAL.md §4.7, §10 item 6). Each image's row is handed to
:class:`captioning.training.caption_eval.CaptionEvaluation`, which scores the split and writes the
results file.

Checkpoints hold the model weights under ``model.*`` plus two plain hyper-parameters: the
flat resolved config and the vocabulary (``ix_to_word``). Nothing custom is pickled; the
reward CLIP is not part of the module's state.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from captioning.checkpoints import CheckpointError, check_checkpoint_vocab, read_captioner_checkpoint
from captioning.config import Config, config_from_dict
from captioning.metrics.clipscore import CLIPScorer, load_scorer
from captioning.models import DecodeOutput, bad_ending_ids, beam_search, decode_sequence, sample, sequence_logprobs
from captioning.models.configured import build_captioner, decode_configured
from captioning.rewards import (
    SelfCriticalReward,
    build_self_critical_reward,
    eval_clip_source,
    reward_clip_source,
)
from captioning.training.losses import language_model_loss, self_critical_loss
from captioning.training.optim import build_optimizer
from captioning.training.scheduled_sampling import ss_prob, teacher_forcing_with_sampling


class CaptionerModule(pl.LightningModule):
    """Transformer captioner trained with MLE, then SCST; validation and test decode and evaluate.

    ``initial_optimizer_state`` (set before fitting, e.g. by ``--init_from`` with
    ``keep_mle_optimizer_state``) is an optimiser state dict carried into the new optimiser.
    """

    def __init__(self, config: dict[str, Any], vocab: dict[str, str]):
        super().__init__()
        self.save_hyperparameters({"config": config, "vocab": vocab})
        self.cfg = config_from_dict(config)
        self.vocab = vocab
        self.model = build_captioner(self.cfg, len(vocab))
        words = list(vocab.values())
        self.unk_idx = len(words) if words and words[-1] == "UNK" else None
        self.bad_ids = bad_ending_ids(vocab) if self.cfg.decode.remove_bad_endings else None
        self._eval_rows: list[dict[str, Any]] = []
        self.initial_optimizer_state: dict | None = None
        self._clips: dict[str, CLIPScorer] = {}
        self._reward: SelfCriticalReward | None = None
        self._backward_start: float | None = None
        self.ss_prob = 0.0

    def on_train_epoch_start(self) -> None:
        """The epoch's scheduled-sampling probability (the original's epoch-start rule)."""
        o = self.cfg.optim
        self.ss_prob = ss_prob(self.current_epoch, o.scheduled_sampling_start, o.scheduled_sampling_increase_every,
                               o.scheduled_sampling_increase_prob, o.scheduled_sampling_max_prob)

    def configure_optimizers(self) -> dict:
        return build_optimizer(self.cfg, self.model.parameters(), initial_state=self.initial_optimizer_state)

    # ---- self-critical training

    def self_critical_active(self, epoch: int | None = None) -> bool:
        """SCST in ``epoch`` (default: the current one): ``self_critical_after`` >= 0 and reached."""
        after = self.cfg.reward.self_critical_after
        return after >= 0 and (self.current_epoch if epoch is None else epoch) >= after

    def setup(self, stage: str) -> None:
        """Build the reward before fitting when SCST is scheduled, so a bad setting fails at once."""
        if stage == "fit" and self.cfg.reward.self_critical_after >= 0:
            self.self_critical_reward()

    def self_critical_reward(self) -> SelfCriticalReward:
        """The configured SCST reward, built once (its CLIP kept on the module's device)."""
        if self._reward is None:
            check_self_critical_config(self.cfg)
            self._reward = build_self_critical_reward(self.cfg, self.vocab, clip=self._maybe_reward_clip())
        if self._reward.clip is not None:
            self._reward.clip.to(self.device)
        return self._reward

    def _clip(self, source: str) -> CLIPScorer:
        """A frozen CLIP scorer by name or path, loaded once per module and kept on the module's device."""
        if source not in self._clips:
            self._clips[source] = load_scorer(source)
        return self._clips[source].to(self.device)

    def _maybe_reward_clip(self) -> CLIPScorer | None:
        return self._clip(reward_clip_source(self.cfg.reward)) if self.cfg.reward.use_clipscore else None

    def _timer(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @torch.no_grad()
    def baseline_decode(self, att_feats: Tensor, att_masks: Tensor | None) -> Tensor:
        """The greedy baseline (B, L): decoded in eval mode (dropout off), as the original."""
        r, was_training = self.cfg.reward, self.model.training
        self.model.eval()
        try:
            if r.sc_beam_size > 1:
                return beam_search(self.model, att_feats, att_masks, beam_size=r.sc_beam_size,
                                   max_length=self.cfg.model.max_length).seq
            return sample(self.model, att_feats, att_masks, method="greedy", max_length=self.cfg.model.max_length).seq
        finally:
            self.model.train(was_training)

    def scst_loss(self, batch: dict[str, Any]) -> Tensor:
        """One SCST step's loss; logs the reward statistics and the sampling / reward times."""
        reward_fn = self.self_critical_reward()
        r = self.cfg.reward
        att_feats, att_masks = batch["att_feats"], batch["att_masks"]
        start = self._timer()
        greedy = self.baseline_decode(att_feats, att_masks) if r.sc_baseline == "greedy" else None
        with torch.set_grad_enabled(torch.is_grad_enabled() and not r.scst_rescore):
            out = sample(self.model, att_feats, att_masks, method=r.train_sample_method,
                         sample_n=r.train_sample_n, max_length=self.cfg.model.max_length)
        sampled = self._timer()
        reward = reward_fn(out.seq, greedy, batch["gts"], batch.get("clip_vis_feats"))
        scored = self._timer()
        logprobs = sequence_logprobs(self.model, att_feats, att_masks, out.seq) if r.scst_rescore else out.logprobs
        loss = self_critical_loss(logprobs, out.seq, reward.advantage)
        b = att_feats.size(0)
        stats = {**reward.stats, "sample_length": float((out.seq > 0).sum(1).float().mean()),
                 "time_sample": sampled - start, "time_reward": scored - sampled}
        for key, value in stats.items():
            self.log(f"train/{key}", value, batch_size=b, prog_bar=key == "reward")
        return loss

    def on_before_backward(self, loss: Tensor) -> None:
        if self.self_critical_active():
            self._backward_start = self._timer()

    def on_after_backward(self) -> None:
        if self._backward_start is not None:
            self.log("train/time_backward", self._timer() - self._backward_start)
        self._backward_start = None

    def mle_loss(self, batch: dict[str, Any]) -> Tensor:
        labels, masks = batch["labels"], batch["masks"]
        if self.training and self.ss_prob > 0:
            logprobs, _ = teacher_forcing_with_sampling(self.model, batch["att_feats"], batch["att_masks"],
                                                        labels[..., :-1], self.ss_prob)
        else:
            logprobs = self.model(batch["att_feats"], batch["att_masks"], labels[..., :-1],
                                  encode_once=self.cfg.model.mle_encode_once)
        target = labels[..., 1:].reshape(-1, labels.size(-1) - 1)
        mask = masks[..., 1:].reshape(-1, masks.size(-1) - 1)
        return language_model_loss(logprobs, target, mask, self.cfg.optim.label_smoothing)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        scst = self.self_critical_active()
        loss = self.scst_loss(batch) if scst else self.mle_loss(batch)
        if not scst and self.cfg.optim.scheduled_sampling_start >= 0:
            self.log("train/scheduled_sampling_prob", self.ss_prob, batch_size=batch["att_feats"].size(0))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss ({loss.item()}) at global step {self.global_step}")
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["att_feats"].size(0))
        return loss

    @torch.no_grad()
    def decode(self, att_feats: Tensor, att_masks: Tensor | None, full_logprobs: bool = False) -> DecodeOutput:
        """Decode with the config's evaluation settings (greedy, beam size 1 by default)."""
        return decode_configured(self.model, self.vocab, self.cfg, att_feats, att_masks, full_logprobs)

    def _eval_step(self, batch: dict[str, Any], split: str) -> None:
        b = batch["att_feats"].size(0)
        if batch["gts"] and batch["gts"][0].size:
            self.log(f"{split}/loss", self.mle_loss(batch), batch_size=b, sync_dist=True)
        out = self.decode(batch["att_feats"], batch["att_masks"], full_logprobs=True)
        captions = decode_sequence(self.vocab, out.seq, remove_bad_endings=bool(self.cfg.decode.remove_bad_endings))
        n_tokens = (out.seq > 0).sum(1).float() + 1
        perplexity = -out.logprobs.sum(1) / n_tokens
        probs_logprobs = out.full_logprobs.exp() * out.full_logprobs
        entropy = -torch.nan_to_num(probs_logprobs).sum((1, 2)) / n_tokens
        clip_scores = self.clip_metrics(batch, captions) if "clip_vis_feats" in batch else {}
        for k, info in enumerate(batch["infos"]):
            self._eval_rows.append({"image_id": info["id"], "caption": captions[k],
                                    "perplexity": float(perplexity[k]), "entropy": float(entropy[k]),
                                    **{key: float(v[k]) for key, v in clip_scores.items()}})

    def clip_metrics(self, batch: dict[str, Any], captions: list[str]) -> dict[str, Tensor]:
        """CLIP-S, RefCLIP-S, RefCLIP-S-Hessel (against the decoded label rows, when the batch has
        any) and, with ``use_grammar``, ``grammar_prob`` from the grammar CLIP's own text features."""
        refs = None
        if all(len(g) for g in batch["gts"]):
            refs = [decode_sequence(self.vocab, torch.as_tensor(g)) for g in batch["gts"]]
        out = self._clip(eval_clip_source(self.cfg.reward)).score(batch["clip_vis_feats"], captions, refs)
        if self.cfg.reward.use_grammar:
            grammar = self._clip(reward_clip_source(self.cfg.reward))
            if not grammar.has_grammar_head:
                raise ValueError(f"use_grammar: {reward_clip_source(self.cfg.reward)} has no grammar head; set "
                                 "clip_load_path to a grammar-CLIP file or retrieval checkpoint")
            out["grammar_prob"] = grammar.grammar(grammar.encode(captions)[0])
        return out

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, self.cfg.train.val_split)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def take_eval_rows(self) -> list[dict[str, Any]]:
        """The rows collected since the last call (one per decoded image; :class:`CaptionEvaluation` scores them)."""
        rows, self._eval_rows = self._eval_rows, []
        return rows


def check_self_critical_config(cfg: Config) -> None:
    """Settings of the SCST step that the reward does not check itself."""
    r = cfg.reward
    if r.sc_baseline not in ("greedy", "mean"):
        raise ValueError(f"sc_baseline must be 'greedy' or 'mean', got {r.sc_baseline!r}")
    if r.sc_baseline == "mean" and r.train_sample_n < 2:
        raise ValueError("sc_baseline 'mean' (leave-one-out) needs train_sample_n >= 2")
    if r.train_sample_method not in ("sample", "greedy"):
        raise ValueError(f"train_sample_method must be 'sample' or 'greedy', got {r.train_sample_method!r}")
    if r.train_beam_size != 1:
        raise ValueError(f"train_beam_size {r.train_beam_size} is not supported (SCST samples with beam size 1)")
    if r.sc_sample_method != "greedy":
        raise ValueError(f"sc_sample_method must be 'greedy' (the baseline is decoded greedily or with "
                         f"sc_beam_size > 1 beams), got {r.sc_sample_method!r}")
    if r.use_clipscore and not cfg.data.input_clipscore_vis_dir:
        raise ValueError("use_clipscore needs input_clipscore_vis_dir (the CLIP-S image embeddings)")


def load_weights(module: CaptionerModule, path: str | Path) -> None:
    """Load only the model weights of a checkpoint (ours or the original's) into ``module``
    (``--init_from``, evaluation)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state, vocab, _ = read_captioner_checkpoint(path)
    check_checkpoint_vocab(path, vocab, module.vocab)
    try:
        module.model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit the configured model: {e}") from None

