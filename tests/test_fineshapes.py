"""FineShapes: determinism, file formats, reference statistics and the caption parser."""
import csv
import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from captioning.fineshapes import (
    Obj,
    Scene,
    full_description,
    parse,
    raw_caption,
    reference_caption,
    relation_holds,
    sample_scene,
    scene_claims,
)
from captioning.fineshapes.dataset import FineShapesPaths, FineShapesSpec, generate, load_scenes
from captioning.fineshapes.lexicon import BACKGROUND_PHRASES
from captioning.fineshapes.world import BACKGROUNDS, COLORS, SHAPES

TINY = dict(n_train=6, n_restval=2, n_val=3, n_test=3, n_eval=4, image_size=64)


def make(root, seed=7):
    paths = FineShapesPaths(images_dir=root / "images", dataset_json=root / "d.json", eval_json=root / "e.json",
                            eval_csv=root / "e.csv", scenes_json=root / "s.json")
    generate(FineShapesSpec(seed=seed, **TINY), paths, progress=False)
    return paths


def digest(paths):
    h = hashlib.sha256()
    for p in sorted(paths.images_dir.iterdir()) + [paths.dataset_json, paths.eval_json, paths.eval_csv, paths.scenes_json]:
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_generation_is_deterministic(tmp_path):
    a, b, c = make(tmp_path / "a"), make(tmp_path / "b"), make(tmp_path / "c", seed=8)
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)


def test_output_formats(tmp_path):
    paths = make(tmp_path)
    data = json.loads(paths.dataset_json.read_text())
    images = data["images"]
    assert [im["split"] for im in images] == ["train"] * 6 + ["restval"] * 2 + ["val"] * 3 + ["test"] * 3
    sentids = []
    for k, im in enumerate(images):
        assert im["imgid"] == im["cocoid"] == k
        assert (paths.images_dir.parent / im["filepath"] / im["filename"]).is_file()
        assert len(im["sentences"]) == 5
        for s in im["sentences"]:
            assert s["tokens"] == [t for t in s["tokens"] if t.isalpha() and t.islower()]
            assert " ".join(s["tokens"]) == s["raw"].lower().rstrip(".")
        sentids += im["sentids"]
    assert sentids == list(range(len(sentids)))
    with Image.open(paths.images_dir / images[0]["filename"]) as img:
        assert img.size == (64, 64) and img.mode == "RGB"

    evals = json.loads(paths.eval_json.read_text())["images"]
    assert [e["id"] for e in evals] == [f"eval_{i:06d}" for i in range(4)]
    with open(paths.eval_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["image", "caption", "background", "object", "relation"]
    assert len(rows) == 4 * 5
    scenes = load_scenes(paths.scenes_json)
    for row in rows:
        stem = row["image"].split(".")[0]
        scene = scenes[stem]
        objects = row["object"].split("\\;")
        assert objects == [f"{o.size} {o.color} {o.shape}" for o in scene.objects]
        relations = row["relation"].split("\\;")
        assert len(relations) == max(1, len(scene.objects) - 1) and all(relations)
        assert row["background"] == scene.background
        assert parse(row["caption"]).claims() == scene_claims(scene).claims()
    assert scenes["0"] == scenes["fs_000000"]  # by cocoid and by stem


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(0)
    return [sample_scene(rng) for _ in range(600)]


def test_world_variety(scenes):
    assert {len(s.objects) for s in scenes} == {1, 2, 3}
    assert {o.shape for s in scenes for o in s.objects} == set(SHAPES)
    assert {o.color for s in scenes for o in s.objects} == set(COLORS)
    assert {s.background for s in scenes} == set(BACKGROUNDS)
    assert {r for s in scenes for _, r, _ in s.chain_relations()} == {"left of", "right of", "above", "below"}
    for s in scenes:
        assert len({(o.color, o.shape) for o in s.objects}) == len(s.objects)
        for i, rel, j in s.chain_relations():
            a, b = s.objects[i], s.objects[j]
            assert relation_holds(a, b, rel)
            perpendicular = {"left of": "above", "right of": "above", "above": "left of", "below": "left of"}[rel]
            assert not relation_holds(a, b, perpendicular) and not relation_holds(b, a, perpendicular)


def _mentions(text, words):
    toks = set(text.split())
    return bool(toks & set(words))


def test_reference_statistics(scenes):
    rng = np.random.default_rng(1)
    refs = [[reference_caption(s, rng) for _ in range(5)] for s in scenes]
    flat = [r for rs in refs for r in rs]
    fulls = [full_description(s, rng) for s in scenes]

    def share(texts, words):
        return np.mean([_mentions(t, words) for t in texts])

    color = share(flat, COLORS)
    assert 0.15 < color < 0.6 and share(fulls, COLORS) == 1.0
    sizes = {"small", "little", "tiny", "large", "big"}
    assert 0.08 < share(flat, sizes) < 0.5 and share(fulls, sizes) == 1.0
    function_words = {"on", "in", "a", "the", "of", "by", "front"}
    bg_words = {w for ps in BACKGROUND_PHRASES.values() for p in ps for w in p.split()} - function_words
    assert 0.2 < share(flat, bg_words) < 0.5
    multi = [r for s, rs in zip(scenes, refs) if len(s.objects) > 1 for r in rs]
    rel_words = {"left", "right", "above", "over", "below", "under", "beneath", "next", "beside", "near"}
    assert 0.1 < share(multi, rel_words) < 0.4
    named = np.mean([_mentions(r, set(SHAPES) | {"circles", "squares", "triangles", "stars", "crosses"}) for r in flat])
    assert named > 0.85
    # The consensus (details stated by at least 3 of 5 references) is coarser than the truth.
    consensus_colors = [sum(_mentions(r, [o.color]) for r in rs) >= 3 for s, rs in zip(scenes, refs) for o in s.objects]
    assert np.mean(consensus_colors) < 0.3


def test_raw_captions_look_typed(scenes):
    rng = np.random.default_rng(2)
    raws = [raw_caption(reference_caption(s, rng), rng) for s in scenes[:200]]
    assert all(r[0].isupper() for r in raws)
    assert 0.3 < np.mean([r.endswith(".") for r in raws]) < 0.7


def test_parser_recovers_exact_truth_from_full_descriptions(scenes):
    rng = np.random.default_rng(3)
    for s in scenes:
        truth = scene_claims(s).claims()
        canonical = parse(full_description(s))
        assert canonical.ok, (full_description(s), canonical.error)
        assert canonical.claims() == truth
        assert [m.key() for m in canonical.mentions] == [(o.shape, o.color, o.size, 1) for o in s.objects]
        assert canonical.relations == s.chain_relations() and canonical.background == s.background
        for _ in range(3):
            text = full_description(s, rng)
            assert parse(text).claims() == truth, text


def test_parser_accepts_every_reference(scenes):
    rng = np.random.default_rng(4)
    for s in scenes:
        for _ in range(5):
            text = raw_caption(reference_caption(s, rng), rng)
            p = parse(text)
            assert p.ok, (text, p.error)
            # every stated fact is true of the scene
            for m in p.mentions:
                assert any(m.shape in (None, o.shape) and m.color in (None, o.color) and m.size in (None, o.size)
                           for o in s.objects), text
            assert p.background in (None, s.background)


def test_parser_hand_examples():
    p = parse("Two circles on the sand.")
    assert p.ok and [m.key() for m in p.mentions] == [("circle", None, None, 2)] and p.background == "sand"
    p = parse("there is a big red square to the right of a star in front of a brick wall")
    assert p.ok and p.relations == [(0, "right of", 1)] and p.background == "brick"
    assert [m.key() for m in p.mentions] == [("square", "red", "large", 1), ("star", None, None, 1)]
    p = parse("a red circle above a blue star and a green cross left of the blue star")
    assert p.ok and len(p.mentions) == 3 and p.relations == [(0, "above", 1), (2, "left of", 1)]


@pytest.mark.parametrize("text", [
    "red a circle", "a red small circle", "an red circle", "a orange star", "a circle left of",
    "on the grass a circle", "a circle on the grass and a square", "two circle", "a circles",
    "there are a circle", "there is two squares", "a circle the grass", "circle", "", "a red",
    "a circle and and a square", "a circle square",
])
def test_parser_rejects_ungrammatical(text):
    p = parse(text)
    assert not p.ok and p.error


def test_parser_rejects_scrambled_word_orders(scenes):
    rng = np.random.default_rng(5)
    tried = rejected = 0
    for s in scenes[:300]:
        words = full_description(s).split()
        shuffled = list(rng.permutation(words))
        if shuffled == words:
            continue
        tried += 1
        rejected += not parse(" ".join(shuffled)).ok
    assert rejected / tried > 0.99


def test_relation_predicates():
    a, b = Obj("circle", "red", "small", 0.2, 0.5), Obj("square", "blue", "large", 0.8, 0.5)
    assert relation_holds(a, b, "left of") and relation_holds(b, a, "right of")
    assert not relation_holds(a, b, "right of") and not relation_holds(a, b, "above")
    assert relation_holds(a, b, "next to")
    with pytest.raises(ValueError, match="unknown relation"):
        relation_holds(a, b, "inside")
    scene = Scene((a, b), "snow")
    assert scene.chain_relations() == [(0, "left of", 1)]
    assert full_description(scene) == "a small red circle left of a large blue square in the snow"
    assert Scene.from_json(json.loads(json.dumps(scene.to_json()))) == scene
