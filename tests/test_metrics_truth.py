"""Exact FineShapes truth metrics on captions with known errors, counted by hand."""
import math

import numpy as np
import pytest

from captioning.fineshapes import Obj, Scene, full_description, sample_scene
from captioning.metrics.truth import caption_facts, truth_metrics

# A small red circle left of a large blue square, which is above a small green star, on grass.
SCENE = Scene((Obj("circle", "red", "small", 0.17, 0.17), Obj("square", "blue", "large", 0.5, 0.17),
               Obj("star", "green", "small", 0.5, 0.5)), "grass")


def counts(caption):
    f = caption_facts(caption, SCENE)
    nonzero = lambda c: {k: v for k, v in c.items() if v}  # noqa: E731
    return f["parses"], nonzero(f["stated"]), nonzero(f["true"]), nonzero(f["recalled"])


def test_full_truth_is_all_true_and_all_recalled():
    ok, stated, true, recalled = counts(full_description(SCENE))
    assert ok
    assert stated == true == {"object": 3, "color": 3, "size": 3, "relation": 2, "background": 1}
    assert recalled == {"object": 3, "color": 3, "size": 3, "relation": 2, "background": 1}


def test_wrong_colour_wrong_relation_wrong_background():
    # blue circle: wrong colour; "right of": wrong direction; sand: wrong background
    ok, stated, true, recalled = counts("a blue circle right of a square on the sand")
    assert ok
    assert stated == {"object": 2, "color": 1, "relation": 1, "background": 1}
    assert true == {"object": 2}
    assert recalled == {"object": 2}


def test_generic_caption_is_precise_but_recalls_little():
    ok, stated, true, recalled = counts("a circle and a square and a star")
    assert stated == true == {"object": 3}
    assert recalled == {"object": 3}


def test_next_to_is_true_but_not_recalled_and_groups_are_counted():
    ok, stated, true, recalled = counts("a circle next to a square")
    assert true["relation"] == 1 and "relation" not in recalled
    ok, stated, true, _ = counts("two circles")   # the scene has one circle
    assert stated == {"object": 1} and true == {}
    ok, stated, true, recalled = counts("three shapes on the grass")
    assert true == {"object": 1, "background": 1} and recalled == {"background": 1}


def test_extra_mentions_are_false_and_unparsable_states_nothing():
    ok, stated, true, _ = counts("a circle and a square and a star and a cross")
    assert stated["object"] == 4 and true["object"] == 3
    ok, stated, true, recalled = counts("circle red a grass")
    assert not ok and stated == {} and recalled == {}


def test_dataset_means():
    scenes = {1: SCENE, "x": SCENE}
    m = truth_metrics({1: full_description(SCENE), "x": "a blue circle right of a square on the sand"}, scenes)
    assert m["parse_rate"] == 1.0
    assert m["precision_color"] == pytest.approx(3 / 4) and m["recall_color"] == pytest.approx(3 / 6)
    assert m["precision_relation"] == pytest.approx(2 / 3) and m["recall_relation"] == pytest.approx(2 / 4)
    assert m["precision_all"] == pytest.approx((12 + 2) / (12 + 5))
    m = truth_metrics({1: "nonsense words"}, scenes)
    assert m["parse_rate"] == 0 and math.isnan(m["precision_all"]) and m["recall_all"] == 0
    with pytest.raises(KeyError, match="no FineShapes scene"):
        truth_metrics({7: "a circle"}, scenes)


def test_random_full_descriptions_are_perfect():
    rng = np.random.default_rng(0)
    scenes = {i: sample_scene(rng) for i in range(100)}
    m = truth_metrics({i: full_description(s, rng) for i, s in scenes.items()}, scenes)
    for cat in ("object", "color", "size", "relation", "background", "all"):
        assert m[f"precision_{cat}"] == 1.0 and m[f"recall_{cat}"] == 1.0, cat


def test_claims_are_the_facts_counted_as_stated_and_true():
    from collections import Counter

    from captioning.metrics.truth import caption_claims

    claims = caption_claims("a blue circle right of a square on the sand", SCENE)
    assert [(c.category, c.text, c.true) for c in claims] == [
        ("object", "circle", True), ("color", "blue", False), ("object", "square", True),
        ("relation", "blue circle right of square", False), ("background", "sand", False)]
    assert caption_claims("circle circle the on", SCENE) is None
    rng = np.random.default_rng(3)
    captions = ["two shapes on grass", "a small red circle left of a large blue square", full_description(SCENE)]
    for caption, scene in [(c, SCENE) for c in captions] + [(full_description(s), sample_scene(rng))
                                                          for s in (sample_scene(rng) for _ in range(20))]:
        facts, claims = caption_facts(caption, scene), caption_claims(caption, scene)
        assert Counter(c.category for c in claims) == +facts["stated"]
        assert Counter(c.category for c in claims if c.true) == +facts["true"]
