"""Evaluation metrics: coco-caption scores, CLIP-S/RefCLIP-S, retrieval, FineCapEval, diversity,
FineShapes truth."""
from captioning.metrics.clipscore import CLIPScorer, clip_s, harmonic_mean, refclip_s, refclip_s_hessel
from captioning.metrics.diversity import BAD_ENDINGS, bad_count_rate, distinct_n, diversity_stats
from captioning.metrics.finecapeval import load_finecapeval, score_finecapeval, write_finecapeval_json
from captioning.metrics.language import (
    LanguageEvaluator,
    language_eval,
    merge_metrics,
    refs_from_coco,
    refs_from_karpathy,
    write_eval_results,
)
from captioning.metrics.retrieval import image_text_retrieval, retrieval_metrics, retrieval_ranks
from captioning.metrics.truth import Claim, caption_claims, caption_facts, truth_metrics

__all__ = [
    "BAD_ENDINGS",
    "Claim",
    "CLIPScorer",
    "LanguageEvaluator",
    "bad_count_rate",
    "caption_claims",
    "caption_facts",
    "clip_s",
    "distinct_n",
    "diversity_stats",
    "harmonic_mean",
    "image_text_retrieval",
    "language_eval",
    "load_finecapeval",
    "merge_metrics",
    "refclip_s",
    "refclip_s_hessel",
    "refs_from_coco",
    "refs_from_karpathy",
    "retrieval_metrics",
    "retrieval_ranks",
    "score_finecapeval",
    "truth_metrics",
    "write_eval_results",
    "write_finecapeval_json",
]
