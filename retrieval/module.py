"""LightningModules of ``retrieval/train_pl.py``: negative-text grammar fine-tuning and CLIP pretraining.

Both hold a :class:`retrieval.grammar_clip.GrammarCLIP` as ``self.model``, so their checkpoints'
``state_dict`` has the keys ``model.clip.*`` (OpenAI layout) and ``model.grammar_head.*``, which
:func:`retrieval.grammar_clip.load_grammar_clip` reads. Hyper-parameters are the flat config only.
"""
from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import clip
from captioning.config import config_from_dict
from captioning.metrics.retrieval import image_text_retrieval
from clip.grammar import GrammarCLIP
from retrieval.config import RetrievalConfig
from retrieval.losses import clip_loss, grammar_counts, grammar_scores, info_nce

ORIGINAL_NO_DECAY = ("bias", "LayerNorm.weight")


def parameter_groups(named: list[tuple[str, nn.Parameter]], weight_decay: float, rule: str) -> list[dict]:
    """AdamW groups of the trainable parameters.

    ``original``: names containing ``bias`` or ``LayerNorm.weight`` skip decay (the original's rule,
    which matches no norm of HF's or OpenAI's CLIP, so norm weights *are* decayed there and here);
    ``standard``: biases, norm weights, embeddings and the logit scale (every tensor with fewer than
    two dimensions, and the embeddings) skip decay.
    """
    if rule == "original":
        skip = [any(nd in n for nd in ORIGINAL_NO_DECAY) for n, _ in named]
    elif rule == "standard":
        skip = [p.ndim < 2 or "embedding" in n for n, p in named]
    else:
        raise ValueError(f"unknown weight_decay_rule {rule!r}")
    decay = [p for (_, p), s in zip(named, skip) if p.requires_grad and not s]
    no_decay = [p for (_, p), s in zip(named, skip) if p.requires_grad and s]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def pretrain_clip(cfg: RetrievalConfig) -> clip.CLIP:
    """A randomly initialised CLIP of the config's architecture (ModifiedResNet image tower)."""
    m = cfg.model
    try:
        layers = tuple(int(x) for x in m.vision_layers.split(","))
    except ValueError:
        layers = ()
    if len(layers) != 4:
        raise ValueError(f"vision_layers must be four comma-separated stage depths, got {m.vision_layers!r}")
    if m.image_resolution % 32:
        raise ValueError(f"image_resolution must be a multiple of 32 (the ResNet's stride), got {m.image_resolution}")
    return clip.CLIP(embed_dim=m.embed_dim, image_resolution=m.image_resolution, vision_layers=layers,
                     vision_width=m.vision_width, vision_patch_size=None, context_length=m.context_length,
                     vocab_size=49408, transformer_width=m.transformer_width,
                     transformer_heads=clip.default_heads(m.transformer_width), transformer_layers=m.transformer_layers)


class _RetrievalModule(pl.LightningModule):
    """Shared parts: config, optimiser, and image-text retrieval at the end of validation and test."""

    def __init__(self, config: dict[str, Any], model: GrammarCLIP):
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.cfg: RetrievalConfig = config_from_dict(config, schema=RetrievalConfig)
        self.model = model
        self._eval: dict[str, list] = {}

    def configure_optimizers(self) -> dict:
        o = self.cfg.optim
        groups = parameter_groups(list(self.model.named_parameters()), o.weight_decay, o.weight_decay_rule)
        opt = torch.optim.AdamW(groups, lr=o.lr, betas=(o.adam_beta1, o.adam_beta2), eps=o.adam_eps)
        if o.lr_schedule == "constant":
            return {"optimizer": opt}
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, int(round(o.warmup_ratio * total)))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _check(self, loss: Tensor) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss ({loss.item()}) at global step {self.global_step}")

    def _keep(self, **tensors: Tensor) -> None:
        for k, v in tensors.items():
            self._eval.setdefault(k, []).append(v.detach())

    def _gather(self, t: Tensor) -> Tensor:
        """``t`` of every process (same shape on each), concatenated in rank order, through the
        trainer's strategy (which stacks them on a new first dimension; one process: ``t`` itself)."""
        return self.all_gather(t).reshape(-1, *t.shape[1:])

    def _retrieval_logs(self, split: str) -> dict[str, Tensor]:
        """R@1/5/10 both ways over all kept (image, text) pairs, plus the kept tensors, gathered."""
        kept = {k: self._gather(torch.cat(v)) for k, v in self._eval.items()}
        self._eval = {}
        sim = kept["image"] @ kept["text"].t()
        result = image_text_retrieval(sim.float().cpu())
        for direction in ("t2i", "i2t"):
            for k in (1, 5, 10):
                self.log(f"{split}/{direction}_R@{k}", result[direction][f"R@{k}"], sync_dist=False)
        return kept

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    def _epoch_end(self, split: str) -> None:
        self._retrieval_logs(split)


class GrammarModule(_RetrievalModule):
    """Negative-text fine-tuning (docs/ORIGINAL.md §6.2): the vision tower is frozen and unused (image
    embeddings are precomputed); the text tower, projection, logit scale and grammar head learn from
    the CLIP loss plus the grammar cross-entropy."""

    def __init__(self, config: dict[str, Any], clip_model: clip.CLIP):
        cfg: RetrievalConfig = config_from_dict(config, schema=RetrievalConfig)
        super().__init__(config, GrammarCLIP(clip_model, with_head=cfg.model.use_grammar).train())
        self.model.clip.visual.requires_grad_(False)

    def losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        image, pos, neg = batch["image"], batch["text"], batch["neg_text"]
        b = pos.shape[0]
        pooled, text = self.model.text_features(torch.cat([pos, neg]))
        scale = self.model.clip.logit_scale.exp()
        joint = self.cfg.model.joint_out
        out = {"clip_loss": clip_loss(image, text[:b], scale, text[b:] if joint else None),
               "pooled": pooled, "text": text[:b]}
        loss = out["clip_loss"]
        if self.model.grammar_head is not None:
            logits = self.model.grammar_logits(pooled)
            labels = torch.cat([torch.ones(b), torch.zeros(b)]).long().to(logits.device)
            out["grammar_loss"] = F.cross_entropy(logits, labels)
            out["grammar_pred"], out["grammar_label"] = logits.argmax(-1), labels
            loss = loss + out["grammar_loss"]
        out["loss"] = loss
        return out

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        out = self.losses(batch)
        self._check(out["loss"])
        b = batch["text"].shape[0]
        for k in ("loss", "clip_loss", "grammar_loss"):
            if k in out:
                self.log(f"train/{k}", out[k], prog_bar=k == "loss", batch_size=b)
        self.log("train/logit_scale", self.model.clip.logit_scale.exp(), batch_size=b)
        return out["loss"]

    def _eval_step(self, batch: dict[str, Any], split: str) -> None:
        out = self.losses(batch)
        b = batch["text"].shape[0]
        for k in ("loss", "clip_loss", "grammar_loss"):
            if k in out:
                self.log(f"{split}/{k}", out[k], batch_size=b, sync_dist=True)
        self._keep(image=F.normalize(batch["image"].float(), dim=-1), text=out["text"])
        if "grammar_pred" in out:
            self._keep(grammar_pred=out["grammar_pred"], grammar_label=out["grammar_label"])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _epoch_end(self, split: str) -> None:
        kept = self._retrieval_logs(split)
        if "grammar_pred" in kept:
            counts = grammar_counts(kept["grammar_pred"], kept["grammar_label"])
            for k, v in {**counts, **grammar_scores(counts)}.items():
                self.log(f"{split}/grammar_{k}", float(v), sync_dist=False)


class PretrainModule(_RetrievalModule):
    """A CLIP trained from scratch with the symmetric contrastive loss on images and captions.

    With ``hard_negatives`` each caption's one-detail-wrong twin is an extra text candidate
    (NegCLIP). With ``paraphrase_weight`` w > 0 the loss adds w times a text-text InfoNCE: a second
    phrasing of each caption must be closer to its caption than to every other caption and twin.
    The first ``text_warmup_steps`` steps train the text tower on that text-text loss alone.

    Why: a text tower blind to word order cannot tell "A right of B" (a relation twin) from
    "B right of A" (a paraphrase of the truth "A left of B"), and while the image tower cannot
    see relations either, the contrastive loss is lowest when twins collapse onto their captions.
    Measured: without the warm-up, relation twins keep a text cosine of 0.999 to their captions
    and relation sensitivity stays at chance; after 200 text-only steps the towers learn
    relations within a few hundred joint steps (retrieval/README.md)."""

    def __init__(self, config: dict[str, Any]):
        cfg: RetrievalConfig = config_from_dict(config, schema=RetrievalConfig)
        super().__init__(config, GrammarCLIP(pretrain_clip(cfg), with_head=False))

    def text_warmup_loss(self, batch: dict[str, Any]) -> Tensor:
        """The text-text loss alone: paraphrases against captions and twins (the image tower rests)."""
        b = batch["text"].shape[0]
        tokens = torch.cat([batch["text"], batch["neg_text"], batch["para_text"]])
        text = self.model.clip.encode_text(tokens)
        return info_nce(text[2 * b:], text[:2 * b], self.model.clip.logit_scale.exp())

    def losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        model = self.model.clip
        b = batch["text"].shape[0]
        hard = self.cfg.data.hard_negatives
        image = F.normalize(model.encode_image(batch["image"]), dim=-1)
        para = "para_text" in batch and self.cfg.data.paraphrase_weight > 0
        tokens = [batch["text"]] + ([batch["neg_text"]] if hard else []) + ([batch["para_text"]] if para else [])
        text = F.normalize(model.encode_text(torch.cat(tokens)), dim=-1)
        scale = model.logit_scale.exp()
        twin = text[b:2 * b] if hard else None
        out = {"clip_loss": clip_loss(image, text[:b], scale, twin), "image": image, "text": text[:b], "twin": twin}
        out["loss"] = out["clip_loss"]
        if para:
            out["paraphrase_loss"] = info_nce(text[2 * b:], text[:2 * b], scale)
            out["loss"] = out["loss"] + self.cfg.data.paraphrase_weight * out["paraphrase_loss"]
        return out

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        b = batch["text"].shape[0]
        if self.global_step < self.cfg.data.text_warmup_steps:
            loss = self.text_warmup_loss(batch)
            self._check(loss)
            self.log("train/text_warmup_loss", loss, prog_bar=True, batch_size=b)
            return loss
        out = self.losses(batch)
        self._check(out["loss"])
        for k in ("loss", "clip_loss", "paraphrase_loss"):
            if k in out:
                self.log(f"train/{k}", out[k], prog_bar=k == "loss", batch_size=b)
        self.log("train/logit_scale", self.model.clip.logit_scale.exp(), batch_size=b)
        return out["loss"]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        limit = self.cfg.optim.max_logit_scale
        if limit > 0:
            with torch.no_grad():
                self.model.clip.logit_scale.clamp_(max=math.log(limit))

    def _eval_step(self, batch: dict[str, Any], split: str) -> None:
        out = self.losses(batch)
        b = batch["text"].shape[0]
        for k in ("loss", "clip_loss", "paraphrase_loss"):
            if k in out:
                self.log(f"{split}/{k}", out[k], batch_size=b, sync_dist=True)
        self._keep(image=out["image"], text=out["text"])
        if out["twin"] is not None:
            beats = ((out["image"] * out["text"]).sum(-1) > (out["image"] * out["twin"]).sum(-1)).float()
            self.log(f"{split}/twin_accuracy", beats.mean(), batch_size=b, sync_dist=True)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")
