"""Training and decoding steps against the original's hot paths, with peak memory, in one run.

For the faithful size (6 + 6 layers, d 512, V 9487, 196 x 2048 grids, 10 images x 5) and the tiny
size (2 + 2, d 128, V 100, 16 x 512 grids, 50 images x 5), on random weights whose EOS logit is
pushed down so that every decode runs all 20 steps:

* MLE step (forward + backward): the original (bench/original_captioner.py), ours with the
  original's repeated encoder (the faithful default) and ours with ``mle_encode_once``;
* the encoder alone and the decoder's cross-attention key/value projection of its output (eval, no
  graph; the same arithmetic as the original's, which redoes the projection at every step): the floor
  under any greedy decode, so the original's greedy time over their sum is the most a faster
  decoding loop could gain;
* greedy decoding (eval, no graph) and sampling 5 per image (train mode, with a graph; ours also
  without a graph, as ``scst_rescore`` samples);
* the SCST step (greedy baseline, CIDEr-D, backward): the original, ours and ours with
  ``scst_rescore``; the leave-one-out (``mean``) baseline, ours only;
* the CIDEr-D reward of 160 images x 6 captions (tiny group only).

Our rows run the training module's own ``mle_loss`` / ``scst_loss``. Every variant runs in its own
subprocess (its peak memory is the growth of the peak RSS over the RSS after set-up), variants
interleaved round by round. Columns: median and spread (min-max) of the step times, peak memory,
the original's time over this row's (``x orig``) and our faithful row's time over this row's
(``x ours``).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_steps.py [--rounds 1] [--sizes faithful tiny] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SIZES = {
    "faithful": dict(model=dict(vocab_size=9487, att_feat_size=2048, d_model=512, d_ff=2048, n_enc=6, n_dec=6,
                                num_heads=8), batch=10, tokens=196, runs=1, warmup=0),
    "tiny": dict(model=dict(vocab_size=100, att_feat_size=512, d_model=128, d_ff=512, n_enc=2, n_dec=2,
                            num_heads=4), batch=50, tokens=16, runs=5, warmup=1),
}
# (step, variant): the first variant of a step is the original (when there is one), the next ours, faithful mode
VARIANTS = {
    "MLE step": ["original", "ours", "encode_once"],
    "encoder (eval)": ["ours"],
    "cross K/V (eval)": ["ours"],
    "greedy decode": ["original", "ours"],
    "sampling 5/img": ["original", "ours", "no_graph"],
    "SCST greedy bl.": ["original", "ours", "rescore"],
    "SCST mean bl.": ["ours", "rescore"],
    "CIDEr-D 160x6": ["original", "ours"],
}
SAMPLE_N, SEQ_PER_IMG, MAX_LENGTH = 5, 5, 20


def synthetic_captions(rng: random.Random, vocab: int, n: int) -> list[list[int]]:
    weights = 1.0 / np.arange(1, vocab + 1)
    return [rng.choices(range(1, vocab + 1), weights=weights, k=rng.randint(8, 16)) for _ in range(n)]


def label_rows(caps: list[list[int]], width: int = 18) -> np.ndarray:
    """BOS + words + EOS, zero-padded: the loader's label layout."""
    rows = np.zeros((len(caps), width), dtype=np.int64)
    for i, c in enumerate(caps):
        rows[i, 1:1 + len(c)] = c
    return rows


class Setup:
    """Models, data and df table of one size, built identically in every worker."""

    def __init__(self, size: str, tmp: Path):
        from captioning.config import Config
        from captioning.data.prepro import write_df
        from captioning.models import TransformerCaptioner
        from captioning.training.module import CaptionerModule
        from cider import document_frequency

        s = SIZES[size]
        m = s["model"]
        rng = random.Random(0)
        corpus = [[" ".join(map(str, c)) + " 0" for c in synthetic_captions(rng, m["vocab_size"], 5)]
                  for _ in range(2000)]
        self.df, self.n_images = document_frequency(corpus)
        write_df(tmp / "bench-idxs.p", self.df, self.n_images)
        b = s["batch"]
        self.gts = [label_rows(synthetic_captions(rng, m["vocab_size"], SEQ_PER_IMG))[:, 1:-1] for _ in range(b)]
        labels = np.stack([label_rows(synthetic_captions(rng, m["vocab_size"], SEQ_PER_IMG)) for _ in range(b)])
        torch.manual_seed(0)
        self.att = torch.randn(b, s["tokens"], m["att_feat_size"])
        self.batch = {"att_feats": self.att, "att_masks": None, "gts": self.gts, "labels": torch.from_numpy(labels),
                      "masks": torch.from_numpy((labels > 0) | (np.arange(18) < 2)).float()}
        vocab = {str(i): f"w{i}" for i in range(1, m["vocab_size"] + 1)}
        self.modules = {}
        for variant, keys in {"ours": {}, "encode_once": {"mle_encode_once": True},
                              "rescore": {"scst_rescore": True}}.items():
            cfg = Config()
            for key, value in dict(att_feat_size=m["att_feat_size"], d_model=m["d_model"], d_ff=m["d_ff"],
                                   N_enc=m["n_enc"], N_dec=m["n_dec"], num_att_heads=m["num_heads"],
                                   max_length=MAX_LENGTH, self_critical_after=0, train_sample_n=SAMPLE_N,
                                   cached_tokens=str(tmp / "bench-idxs.p"), **keys).items():
                cfg.set(key, value)
            self.modules[variant] = CaptionerModule(cfg.to_flat_dict(), vocab)
        torch.manual_seed(0)
        self.model = TransformerCaptioner(**m, max_length=MAX_LENGTH)
        with torch.no_grad():
            self.model.model.generator.proj.bias[0] = -1e4  # never EOS: every decode runs all steps
        for module in self.modules.values():
            module.model = self.model
            module.log = lambda *args, **kwargs: None


def step_fn(setup: Setup, step: str, variant: str, size: str):
    """A zero-argument function running one step of ``variant``."""
    from bench_cider import make_data
    from original_captioner import FixedDfCider, OriginalCaptioner, scst_step

    from captioning.models import sample
    from cider import CiderD

    model, att = setup.model, setup.att
    if step == "CIDEr-D 160x6":
        df, n_df, gts, res = make_data(0, 10_000, 160, 5)
        if variant == "original":
            def run():
                scorer = FixedDfCider(df, n_df)
                for entry in res:
                    scorer += (entry["caption"][0], gts[entry["image_id"]])
                return scorer.compute_cider()
            return run
        ours = CiderD(df={"document_frequency": df, "ref_len": n_df})
        cands, index = [e["caption"][0] for e in res], [e["image_id"] for e in res]
        refs = [gts[i] for i in range(160)]
        return lambda: ours.score(cands, refs, index)
    if variant == "original":
        orig = OriginalCaptioner(model)
        labels = setup.batch["labels"]
        if step == "MLE step":
            def run():
                orig.train()
                lp = orig(att, labels[..., :-1].reshape(-1, 17))
                target, mask = labels[..., 1:].reshape(-1, 17), setup.batch["masks"][..., 1:].reshape(-1, 17)
                loss = -(lp.gather(2, target.unsqueeze(2)).squeeze(2) * mask).sum() / mask.sum()
                loss.backward()
                orig.zero_grad(set_to_none=True)
            return run
        if step == "greedy decode":
            def run():
                orig.eval()
                with torch.no_grad():
                    return orig.sample(att, "greedy")
            return run
        if step == "sampling 5/img":
            def run():
                orig.train()
                return orig.sample(att, "sample", SAMPLE_N)
            return run

        def run():
            scst_step(orig, att, setup.gts, setup.df, setup.n_images, SAMPLE_N)
            orig.zero_grad(set_to_none=True)
        return run
    if step == "encoder (eval)":
        def run():
            model.eval()
            with torch.no_grad():
                return model.encode(att)
        return run
    if step == "cross K/V (eval)":
        model.eval()
        with torch.no_grad():
            encoded = model.encode(att)

        def run():
            with torch.no_grad():
                return model.prepare_decoding(encoded)
        return run
    module = setup.modules["ours" if variant in ("no_graph",) else variant]
    if step == "MLE step":
        def run():
            module.train()
            module.mle_loss(setup.batch).backward()
            model.zero_grad(set_to_none=True)
        return run
    if step == "greedy decode":
        def run():
            model.eval()
            with torch.no_grad():
                return sample(model, att, max_length=MAX_LENGTH)
        return run
    if step == "sampling 5/img":
        def run():
            model.train()
            with torch.set_grad_enabled(variant != "no_graph"):
                return sample(model, att, method="sample", sample_n=SAMPLE_N, max_length=MAX_LENGTH)
        return run
    module.cfg.reward.sc_baseline = "greedy" if step.startswith("SCST greedy") else "mean"
    module.setup("fit")

    def run():
        module.train()
        module.scst_loss(setup.batch).backward()
        model.zero_grad(set_to_none=True)
    return run


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def worker(size: str, step: str, variant: str, runs: int, warmup: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        setup = Setup(size, Path(tmp))
        fn = step_fn(setup, step, variant, size)
        base = rss_kib()
        times = []
        for i in range(warmup + runs):
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times.append(time.perf_counter() - start)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"times": times, "peak_mib": max(peak - base, 0) / 1024}))


def check_parity(threads: int) -> None:
    """The original re-implementation and ours give the same numbers on the same weights (eval mode)."""
    from original_captioner import OriginalCaptioner

    from captioning.models import TransformerCaptioner, sample

    torch.set_num_threads(threads)
    torch.manual_seed(1)
    ours = TransformerCaptioner(**SIZES["tiny"]["model"]).eval()
    orig = OriginalCaptioner(ours).eval()
    att = torch.randn(4, 16, 512)
    seq = torch.randint(1, 101, (20, 12))
    seq[:, 0] = 0
    seq[3, 7:] = 0
    with torch.no_grad():
        diff = (orig(att, seq) - ours(att, None, seq)).abs().max().item()
        same = torch.equal(orig.sample(att)[0], sample(ours, att).seq)
    print(f"parity with the original re-implementation: max |log-prob diff| {diff:.1e}, same greedy tokens: {same}")
    if diff > 1e-4 or not same:
        raise SystemExit("the original re-implementation and ours disagree")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds (each variant once per round)")
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--steps", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", nargs=3, metavar=("SIZE", "STEP", "VARIANT"), help=argparse.SUPPRESS)
    ap.add_argument("--runs", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        worker(*args.worker, args.runs, args.warmup)
        return
    check_parity(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, fp32, {args.rounds} round(s)")
    jobs = [(size, step, variant) for size in args.sizes for step in args.steps for variant in VARIANTS[step]
            if not (step.startswith("CIDEr") and size != "tiny")]
    results: dict[tuple[str, str, str], dict] = {job: {"times": [], "peak_mib": 0.0} for job in jobs}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    for _ in range(args.rounds):
        for size, step, variant in jobs:
            s = SIZES[size]
            command = [sys.executable, __file__, "--threads", str(args.threads), "--runs", str(s["runs"]),
                       "--warmup", str(s["warmup"]), "--worker", size, step, variant]
            out = subprocess.run(command, env=env, capture_output=True, text=True)
            if out.returncode:  # once more: a shared machine can fail a process for reasons of its own
                print(f"{size} / {step} / {variant} failed, retrying:\n{out.stderr[-1000:]}", file=sys.stderr)
                out = subprocess.run(command, env=env, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{size} / {step} / {variant} failed:\n{out.stderr[-3000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  {size} / {step} / {variant}: {r}", file=sys.stderr, flush=True)
            results[(size, step, variant)]["times"] += r["times"]
            results[(size, step, variant)]["peak_mib"] = max(results[(size, step, variant)]["peak_mib"], r["peak_mib"])
    print(f"{'size':<9}{'step':<17}{'variant':<12}{'median s':>9}{'spread s':>16}{'peak MiB':>9}"
          f"{'x orig':>8}{'x ours':>8}")
    for size, step, variant in jobs:
        r = results[(size, step, variant)]
        med = statistics.median(r["times"])
        ref = {v: statistics.median(results[(size, step, v)]["times"]) for v in VARIANTS[step]}
        x_orig = f"{ref['original'] / med:8.2f}" if "original" in ref else f"{'-':>8}"
        x_ours = f"{ref['ours'] / med:8.2f}" if variant not in ("original", "ours") else f"{'':>8}"
        spread = f"{min(r['times']):.3f}-{max(r['times']):.3f}"
        print(f"{size:<9}{step:<17}{variant:<12}{med:9.3f}{spread:>16}{r['peak_mib']:9.0f}{x_orig}{x_ours}")
    for size in args.sizes:
        enc, kv, greedy = (results.get((size, step, v)) for step, v in (
            ("encoder (eval)", "ours"), ("cross K/V (eval)", "ours"), ("greedy decode", "original")))
        if enc and kv and greedy and enc["times"] and kv["times"] and greedy["times"]:
            floor = statistics.median(enc["times"]) + statistics.median(kv["times"])
            print(f"{size}: the original's greedy decode / (encoder + cross K/V) = "
                  f"{statistics.median(greedy['times']) / floor:.2f}x, the ceiling of any greedy speed-up that keeps "
                  "the model's arithmetic (a decoding loop that took no time at all)")


if __name__ == "__main__":
    main()
