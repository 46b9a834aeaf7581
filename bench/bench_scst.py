"""Time split of one self-critical step (sampling / reward / backward), per reward and baseline.

On the FineShapes size (d_model 128, 2 + 2 layers, the FineShapes vocabulary and label rows, 16
visual tokens, tiny CLIP) with random features and a random CLIP: the numbers are speed only.
Each row is the median over ``--repeats`` steps, all in this process; the last column is the
step time relative to the CIDEr-D / greedy-baseline row. ``mean`` (leave-one-out) skips the
greedy pass.

    .venv/bin/python bench/bench_scst.py [--threads 1] [--batch 50] [--repeats 5] [--size fineshapes]

Needs data/fineshapes.json, data/fineshapes_label.h5 and data/fineshapes-train-idxs.p (make demo).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import h5py
import numpy as np
import torch

import clip
from captioning.config import RewardConfig
from captioning.metrics.clipscore import CLIPScorer
from captioning.models import TransformerCaptioner, sample
from captioning.rewards import CiderReward, SelfCriticalReward, reward_terms
from captioning.training.losses import self_critical_loss
from clip.grammar import GrammarCLIP

SIZES = {
    "fineshapes": dict(d_model=128, d_ff=512, n_enc=2, n_dec=2, num_heads=4, att_feat_size=512, tokens=16),
    "faithful": dict(d_model=512, d_ff=2048, n_enc=6, n_dec=6, num_heads=8, att_feat_size=2048, tokens=196),
}
REWARDS = {
    "cider": RewardConfig(),
    "clips": RewardConfig(use_clipscore=True, clipscore_reward_weight=2.0),
    "cider_clips": RewardConfig(use_clipscore=True, clipscore_reward_weight=2.0, use_multi_rewards=True),
    "clips_grammar": RewardConfig(use_clipscore=True, clipscore_reward_weight=2.0, use_multi_rewards=True,
                                  use_grammar=True, use_grammar_baseline=True),
}


def load_data(batch: int) -> tuple[dict[str, str], list[np.ndarray]]:
    with open("data/fineshapes.json") as f:
        info = json.load(f)
    with h5py.File("data/fineshapes_label.h5", "r") as f:
        labels, start, end = f["labels"][:], f["label_start_ix"][:], f["label_end_ix"][:]
    gts = [labels[s - 1:e].astype(np.int64) for s, e in zip(start[:batch], end[:batch])]
    return info["ix_to_word"], gts


def tick() -> float:
    return time.perf_counter()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--sample_n", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", choices=sorted(SIZES), default="fineshapes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vocab, gts = load_data(args.batch)
    s = SIZES[args.size]
    model = TransformerCaptioner(vocab_size=len(vocab), att_feat_size=s["att_feat_size"], d_model=s["d_model"],
                                 d_ff=s["d_ff"], n_enc=s["n_enc"], n_dec=s["n_dec"], num_heads=s["num_heads"],
                                 max_length=20)
    model.model.generator.proj.bias.data[0] = -3.0  # longer captions than a random model's
    att = torch.randn(args.batch, s["tokens"], s["att_feat_size"])
    cider = CiderReward("data/fineshapes-train-idxs.p")
    clip_model = clip.CLIP(**clip.tiny_clip_config("resnet"))
    reward_clip = CLIPScorer(GrammarCLIP(clip_model, with_head=True))
    vis = torch.randn(args.batch, clip_model.text_projection.shape[1])
    print(f"size {args.size}, batch {args.batch} x {args.sample_n} samples, {args.threads} thread(s), "
          f"median of {args.repeats} steps; seconds")
    print(f"{'reward':<14}{'baseline':<9}{'greedy':>8}{'sample':>8}{'reward':>8}{'backward':>9}{'step':>8}{'ratio':>7}")
    reference = None
    for name, rcfg in REWARDS.items():
        for baseline in ("greedy", "mean"):
            scst = SelfCriticalReward(reward_terms(rcfg), vocab, baseline, cider=cider, clip=reward_clip)
            times = []
            for _ in range(args.repeats + 1):
                t0 = tick()
                greedy = None
                if baseline == "greedy":
                    model.eval()
                    with torch.no_grad():
                        greedy = sample(model, att).seq
                    model.train()
                t1 = tick()
                out = sample(model, att, method="sample", sample_n=args.sample_n)
                t2 = tick()
                adv = scst(out.seq, greedy, gts, vis).advantage
                t3 = tick()
                self_critical_loss(out.logprobs, out.seq, adv).backward()
                model.zero_grad(set_to_none=True)
                t4 = tick()
                times.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0))
            med = [statistics.median(col) for col in zip(*times[1:])]
            reference = reference or med[-1]
            print(f"{name:<14}{baseline:<9}" + "".join(f"{v:>8.3f}" for v in med[:3])
                  + f"{med[3]:>9.3f}{med[4]:>8.3f}{med[4] / reference:>7.2f}")


if __name__ == "__main__":
    main()
