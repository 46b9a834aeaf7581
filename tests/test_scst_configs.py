"""The phase-2 configs: SCST schedule and reward terms of the faithful COCO files (docs/ORIGINAL.md §4.4,
§8.1) and of the FineShapes files over their phase-1 base."""
from pathlib import Path

import pytest

from captioning.config import load_config
from captioning.rewards import reward_terms

REPO = Path(__file__).resolve().parents[1]
# name: (batch_size, terms as (name, weight, baselined))
COCO = {
    "clipRN50_cider": (200, [("CIDEr", 1.0, True)]),
    "clipRN50_clips": (160, [("CLIP-S", 2.0, True)]),
    "clipRN50_cider_clips": (160, [("CIDEr", 1.0, True), ("CLIP-S", 2.0, True)]),
    "clipRN50_clips_grammar": (160, [("CLIP-S", 2.0, True), ("grammar", 1.0, True)]),
}


def terms(cfg):
    return [(t.name, t.weight, t.baselined) for t in reward_terms(cfg.reward)]


@pytest.mark.parametrize("name", sorted(COCO))
def test_coco_phase2_configs(name):
    cfg = load_config(REPO / "configs" / "phase2" / f"{name}.yml")
    batch, expected = COCO[name]
    assert terms(cfg) == expected and cfg.get("batch_size") == batch
    # 15 RL epochs from --init_from (the original: epochs 25..39 of a resumed MLE run)
    assert (cfg.get("self_critical_after"), cfg.get("max_epochs")) == (0, 15)
    assert cfg.get("learning_rate") == pytest.approx(5e-6) and cfg.get("noamopt") is False
    assert (cfg.get("train_sample_n"), cfg.get("sc_baseline"), cfg.get("precision")) == (5, "greedy", "32")
    assert cfg.get("cached_tokens") == "coco-train-idxs" and cfg.get("clip_model") == "ViT-B/32"
    assert (cfg.get("clip_load_path") is not None) is (name == "clipRN50_clips_grammar")


FINESHAPES = {
    "fineshapes_cider": [("CIDEr", 1.0, True)],
    "fineshapes_clips": [("CLIP-S", 2.0, True)],
    "fineshapes_cider_clips": [("CIDEr", 1.0, True), ("CLIP-S", 2.0, True)],
    "fineshapes_clips_grammar": [("CLIP-S", 2.0, True), ("grammar", 1.0, True)],
}


@pytest.mark.parametrize("name", sorted(FINESHAPES))
def test_fineshapes_phase2_configs(name):
    cfg = load_config(REPO / "configs" / "phase2" / f"{name}.yml")
    mle = load_config(REPO / "configs" / "phase1" / "fineshapes_mle.yml")
    assert terms(cfg) == FINESHAPES[name]
    assert (cfg.get("self_critical_after"), cfg.get("noamopt"), cfg.get("train_sample_n")) == (0, False, 5)
    assert (cfg.get("max_epochs"), cfg.get("limit_train_batches"), cfg.get("drop_prob_lm")) == (1, 60, 0.0)
    steps = cfg.get("max_epochs") * cfg.get("limit_train_batches")  # >= 10 curve points of each kind (#18)
    assert steps // cfg.get("losses_log_every") >= 10 and steps // cfg.get("val_check_interval") >= 10
    assert cfg.get("checkpoint_path") == f"save/{name}"
    # data, model and CLIP come from phase 1, so the MLE checkpoint fits and the features match
    for key in ("input_json", "input_att_dir", "input_clipscore_vis_dir", "cached_tokens", "clip_model",
                "att_feat_size", "d_model", "N_enc", "N_dec", "d_ff", "num_att_heads", "max_length"):
        assert cfg.get(key) == mle.get(key), key
    assert (cfg.get("clip_load_path") is not None) is ("grammar" in name)
