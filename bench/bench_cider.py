"""CIDEr-D speed against pycocoevalcap's pure-Python scorer, on an SCST-sized batch.

160 images x (5 samples + 1 greedy) index-string candidates, 5 references each, df from a
synthetic 10k-image corpus. The baseline is pycocoevalcap's ``CiderScorer`` fed entry by
entry as pyciderevalcap does, with its df and ref_len fixed to the corpus (the df-file
mode the SCST reward uses); a second row compares corpus mode with pycocoevalcap's
``Cider`` on one candidate per image. Both sides run in this process on the same inputs
and their per-item scores are compared.

    .venv/bin/python bench/bench_cider.py
"""
from __future__ import annotations

import argparse
import random
import time
from collections import defaultdict

import numpy as np
from pycocoevalcap.cider.cider import Cider as CocoCider
from pycocoevalcap.cider.cider_scorer import CiderScorer

from cider import CiderD, document_frequency


class FixedDfScorer(CiderScorer):
    """pycocoevalcap's scorer with document_frequency and ref_len set from a df file.

    Its ``compute_cider`` assigns ``ref_len = log(#entries)``; the property ignores that
    assignment so the file's value is used, as pyciderevalcap's df mode does.
    """

    ref_len = property(lambda self: self._log_ref_len, lambda self, value: None)

    def __init__(self, df: dict, n_images: int):
        super().__init__()
        self._log_ref_len = np.log(float(n_images))
        self.document_frequency = defaultdict(float, df)


def random_caption(rng: random.Random, vocab_size: int, zipf: np.ndarray) -> list[int]:
    length = rng.randint(8, 16)
    return [int(w) for w in rng.choices(range(1, vocab_size + 1), weights=zipf, k=length)]


def make_data(seed: int, n_corpus: int, n_images: int, n_samples: int, vocab_size: int = 9000):
    rng = random.Random(seed)
    zipf = 1.0 / np.arange(1, vocab_size + 1)
    to_str = lambda ids: " ".join(map(str, ids)) + " 0"  # noqa: E731
    corpus = [[to_str(random_caption(rng, vocab_size, zipf)) for _ in range(5)] for _ in range(n_corpus)]
    df, n_df_images = document_frequency(corpus)
    gts, res = {}, []
    for image in range(n_images):
        refs = [random_caption(rng, vocab_size, zipf) for _ in range(5)]
        gts[image] = [to_str(r) for r in refs]
        for _ in range(n_samples + 1):  # samples share words and phrases with a reference
            base = refs[rng.randrange(5)]
            cut = rng.randint(2, len(base))
            sample = base[:cut] + random_caption(rng, vocab_size, zipf)[: rng.randint(0, 8)]
            text = to_str(sample) if len(sample) < 20 else " ".join(map(str, sample[:20]))  # cut: no 0
            res.append({"image_id": image, "caption": [text]})
    return df, n_df_images, gts, res


def side_by_side(repeats: int, reference, ours):
    """Alternate the two functions ``repeats`` times; best time of each and their last outputs."""
    times: dict[str, list[float]] = {"reference": [], "ours": []}
    outputs = {}
    for _ in range(repeats):
        for name, fn in (("reference", reference), ("ours", ours)):
            t = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - t)
    return min(times["reference"]), min(times["ours"]), outputs["reference"], outputs["ours"]


def report(label: str, t_ref: float, t_ours: float, s_ref: np.ndarray, s_ours: np.ndarray) -> None:
    diff = np.abs(np.asarray(s_ref) - s_ours).max()
    print(f"{label:<13} pycocoevalcap {t_ref * 1e3:7.1f} ms   ours {t_ours * 1e3:5.1f} ms   "
          f"speed-up {t_ref / t_ours:5.1f}x   max |diff| {diff:.1e}   mean {s_ours.mean():.4f}")
    if diff > 1e-9:
        raise SystemExit(f"{label}: scores differ from pycocoevalcap by {diff}")


def run_coco_fixed_df(df: dict, n_images: int, gts: dict, res: list) -> np.ndarray:
    scorer = FixedDfScorer(df, n_images)
    for entry in res:
        scorer += (entry["caption"][0], gts[entry["image_id"]])
    return np.array(scorer.compute_cider())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--corpus", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    df, n_df_images, gts, res = make_data(0, args.corpus, args.images, args.samples)
    t = time.perf_counter()
    ours = CiderD(df={"document_frequency": df, "ref_len": n_df_images})
    build = time.perf_counter() - t
    print(f"{args.images} images x {args.samples + 1} candidates, 5 refs each; df: {len(df)} n-grams "
          f"from {n_df_images} images (index build {build * 1e3:.0f} ms, once)")

    t_ref, t_ours, s_ref, (_, s_ours) = side_by_side(
        args.repeats, lambda: run_coco_fixed_df(df, n_df_images, gts, res), lambda: ours.compute_score(gts, res)
    )
    report("df-file mode", t_ref, t_ours, s_ref, s_ours)
    image_index = [e["image_id"] for e in res]
    candidates = [e["caption"][0] for e in res]
    refs = [gts[i] for i in range(args.images)]
    t_ref, t_ours, s_ref, s_ours = side_by_side(
        args.repeats,
        lambda: run_coco_fixed_df(df, n_df_images, gts, res),
        lambda: ours.score(candidates, refs, image_index),
    )
    report("  .score()", t_ref, t_ours, s_ref, s_ours)

    gts1 = {i: gts[i] for i in range(args.images)}
    res1 = {e["image_id"]: e["caption"] for e in res[:: args.samples + 1]}
    corpus = CiderD(df="corpus")
    t_ref, t_ours, (_, s_ref), (_, s_ours) = side_by_side(
        args.repeats, lambda: CocoCider().compute_score(gts1, res1), lambda: corpus.compute_score(gts1, res1)
    )
    report("corpus mode", t_ref, t_ours, s_ref, s_ours)
    print("(corpus mode: one candidate per image, as in evaluation)")


if __name__ == "__main__":
    main()
