"""tools/eval_finecapeval.py and tools/eval_clip_retrieval.py on a tiny FineShapes world."""
import csv
import json

import numpy as np
import pytest
import torch

import clip
from captioning.data.features import write_packed
from captioning.evaluation.finecapeval import evaluate_finecapeval
from captioning.evaluation.retrieval import run as run_retrieval
from captioning.fineshapes.dataset import FineShapesPaths, FineShapesSpec, generate
from captioning.metrics import load_finecapeval, score_finecapeval


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("w")
    paths = FineShapesPaths(images_dir=root / "images", dataset_json=root / "d.json", eval_json=root / "e.json",
                            eval_csv=root / "e.csv", scenes_json=root / "s.json")
    generate(FineShapesSpec(n_train=2, n_restval=0, n_val=0, n_test=6, n_eval=6, image_size=32), paths,
             progress=False, workers=1)
    return root, paths


def test_eval_finecapeval_truth_and_criteria(world, tmp_path):
    root, paths = world
    with open(paths.eval_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    generated = {}
    for r in rows:
        generated.setdefault(r["image"].split(".")[0], r["caption"])  # a true full description per image
    gen_path = tmp_path / "gen.json"
    gen_path.write_text(json.dumps(generated))
    result = evaluate_finecapeval(paths.eval_csv, gen_path, scenes_path=paths.scenes_json, caption_metrics=False)
    expected = score_finecapeval(load_finecapeval(paths.eval_csv), generated)
    assert result["criteria"] == expected
    assert result["truth"]["precision_all"] == 1.0 and result["truth"]["recall_all"] == 1.0
    saved = json.loads((tmp_path / "gen_finecapeval.json").read_text())
    assert saved["criteria"]["overall"] == pytest.approx(expected["overall"])

    generated = {k: "a circle" for k in generated}
    gen_path.write_text(json.dumps(generated))
    worse = evaluate_finecapeval(paths.eval_csv, gen_path, scenes_path=paths.scenes_json, caption_metrics=False)
    assert worse["criteria"]["overall"] < expected["overall"]
    assert worse["truth"]["recall_all"] < 0.5


def test_eval_clip_retrieval_with_matching_features(world, tmp_path):
    root, paths = world
    torch.manual_seed(0)
    model = clip.CLIP(**clip.model.tiny_clip_config("resnet")).eval()
    torch.save(model.state_dict(), tmp_path / "clip.pt")
    test_ids = [str(im["cocoid"]) for im in json.loads(paths.dataset_json.read_text())["images"] if im["split"] == "test"]
    captions = {i: f"caption number {k} about shapes {'x' * k}" for k, i in enumerate(test_ids)}
    # image features equal to the text embeddings: every caption retrieves its own image first
    feats = clip.text_embeddings(model, [captions[i] for i in test_ids]).numpy()
    write_packed(tmp_path / "vis.npy", test_ids, feats)
    results = tmp_path / "eval_results" / "m_test.json"
    results.parent.mkdir()
    results.write_text(json.dumps({"overall": {}, "imgToEval": {i: {"caption": c} for i, c in captions.items()}}))
    r = run_retrieval(str(results), False, str(tmp_path / "clip.pt"), str(tmp_path / "vis.npy"), None, None)
    assert r["t2i"]["R@1"] == 100.0 and r["i2t"]["R@1"] == 100.0 and r["n"] == 6
    assert json.loads((tmp_path / "eval_results" / "m_test_retrieval.json").read_text())["t2i"]["medr"] == 1

    # from the images themselves (random CLIP): runs, covers every test image
    r = run_retrieval(None, True, str(tmp_path / "clip.pt"), None, str(paths.dataset_json), str(root),
                      output=str(tmp_path / "gt.json"))
    assert r["n"] == 6 and 0 <= r["t2i"]["R@1"] <= 100


def test_eval_clip_retrieval_errors(world, tmp_path):
    _, paths = world
    model = clip.CLIP(**clip.model.tiny_clip_config("resnet"))
    torch.save(model.state_dict(), tmp_path / "clip.pt")
    write_packed(tmp_path / "bad.npy", ["0"], np.ones((1, 7), np.float32))
    (tmp_path / "g.json").write_text(json.dumps({"0": "a circle"}))
    with pytest.raises(ValueError, match="same CLIP"):
        run_retrieval(str(tmp_path / "g.json"), False, str(tmp_path / "clip.pt"), str(tmp_path / "bad.npy"), None, None)
    with pytest.raises(ValueError, match="--gt needs --input_json"):
        run_retrieval(None, True, str(tmp_path / "clip.pt"), None, None, None)
