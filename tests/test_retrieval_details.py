"""One-detail-wrong twins of FineShapes full descriptions, checked with the FineShapes parser and truth."""
import numpy as np
import pytest

from captioning.fineshapes import Obj, Scene, parse, sample_scene
from captioning.fineshapes.world import relation_between
from captioning.metrics.truth import CATEGORIES, caption_facts
from retrieval.details import DETAILS, description_and_twin, details_of, flip_relation, mirror

CATEGORY = {"color": "color", "shape": "object", "size": "size", "relation": "relation", "background": "background"}


def _false(caption, scene):
    facts = caption_facts(caption, scene)
    assert facts["parses"], caption
    return {c: facts["stated"][c] - facts["true"][c] for c in CATEGORIES}


def test_each_twin_is_false_in_exactly_its_category():
    rng = np.random.default_rng(0)
    for k in range(150):
        scene = sample_scene(np.random.default_rng([5, k]))
        for detail in details_of(scene):
            positive, twin = description_and_twin(scene, detail, rng)
            assert twin != positive
            assert sum(_false(positive, scene).values()) == 0, positive
            wrong = {c for c, n in _false(twin, scene).items() if n}
            assert wrong == {CATEGORY[detail]}, (detail, positive, twin)


def test_attribute_twins_keep_the_wording_elsewhere():
    rng = np.random.default_rng(1)
    words = {"color": {"red", "green", "blue", "yellow", "purple", "orange"},
             "shape": {"circle", "square", "triangle", "star", "cross"},
             "size": {"small", "little", "tiny", "large", "big"}}
    for k in range(100):
        scene = sample_scene(np.random.default_rng([6, k]))
        for detail, vocab in words.items():
            positive, twin = description_and_twin(scene, detail, rng)
            a, b = positive.split(), twin.split()
            assert len(a) == len(b)
            changed = [(x, y) for x, y in zip(a, b) if x != y]
            assert changed and all(x in vocab and y in vocab for x, y in changed), (positive, twin)


def test_relation_twin_flips_one_phrase():
    assert flip_relation("a red circle to the left of a blue star on snow", np.random.default_rng(0)) == \
        "a red circle to the right of a blue star on snow"
    assert flip_relation("a red circle over a blue star on snow", np.random.default_rng(0)) == \
        "a red circle under a blue star on snow"
    with pytest.raises(ValueError):
        flip_relation("a red circle on snow", np.random.default_rng(0))
    single = Scene((Obj("circle", "red", "small", 0.5, 0.5),), "snow")
    assert "relation" not in details_of(single)
    with pytest.raises(ValueError):
        description_and_twin(single, "relation", np.random.default_rng(0))


def test_mirror_swaps_left_and_right_only():
    a, b, c = Obj("circle", "red", "small", 0.17, 0.5), Obj("star", "blue", "large", 0.83, 0.5), \
        Obj("cross", "green", "small", 0.83, 0.17)
    m = mirror(Scene((a, b, c), "grass"))
    assert relation_between(a, b) == "left of" and relation_between(*m.objects[:2]) == "right of"
    assert relation_between(b, c) == relation_between(*m.objects[1:]) == "below"
    assert parse(description_and_twin(m, "relation", np.random.default_rng(0))[0]).ok
    assert set(DETAILS) == set(CATEGORY)
