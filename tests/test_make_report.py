"""tools/make_report.py for any run ids: the table's numbers are the results files' and the truth metrics'."""
import csv
import json
import runpy
import sys
from pathlib import Path

import pytest

from captioning.fineshapes.dataset import load_scenes
from captioning.metrics import truth_metrics

TOOL = str(Path(__file__).resolve().parents[1] / "tools" / "make_report.py")


def fake_run(root: Path, run_id: str, captions: dict[str, str], cider: float, clip_s: float, n_log: int) -> None:
    """The files an evaluated run leaves: results (no retrieval, no FineCapEval) and a CSV training log."""
    (root / "eval_results").mkdir(exist_ok=True)
    results = {"overall": {"Bleu_4": 0.25, "METEOR": 0.2, "ROUGE_L": 0.5, "CIDEr": cider, "CLIP-S": clip_s,
                           "RefCLIP-S": clip_s + 0.1},
               "imgToEval": {i: {"caption": c} for i, c in captions.items()}}
    (root / "eval_results" / f"{run_id}_test.json").write_text(json.dumps(results))
    log = root / "save" / run_id / "logs" / "version_0" / "metrics.csv"
    log.parent.mkdir(parents=True)
    with open(log, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "step", "train/loss", "val/CIDEr"])
        w.writerows([[0, s, 3.0 / (s + 1), ""] for s in range(n_log)] + [[0, n_log, "", cider]])


def test_report_of_any_runs(tiny_world_factory, tmp_path, monkeypatch, capsys):
    root, _ = tiny_world_factory()
    dataset = json.loads((root / "dataset.json").read_text())
    test = [im for im in dataset["images"] if im["split"] == "test"]
    first = {str(im["cocoid"]): im["sentences"][0]["raw"] for im in test}
    generic = {str(im["cocoid"]): "a shape" for im in test}
    monkeypatch.chdir(tmp_path)
    fake_run(tmp_path, "coco_a", first, 1.234, 0.71, 4)
    fake_run(tmp_path, "coco_b", generic, 0.5, 0.52, 3)
    monkeypatch.setattr(sys, "argv", [
        "make_report.py", "--runs", "coco_a,coco_b", "--labels", "A,B", "--split", "test", "--dataset_json",
        str(root / "dataset.json"), "--images_root", str(root), "--scenes", str(root / "s.json"),
        "--clipscore_features", "none", "--grammar_clip", "none", "--out_dir", "report"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(TOOL, run_name="__main__")
    assert e.value.code == 0
    for name in ("report.md", "report.json", "captions.png", "curves.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    numbers = json.loads((tmp_path / "report" / "report.json").read_text())
    scenes = load_scenes(root / "s.json")
    for label, captions, cider, clip_s in (("A", first, 1.234, 0.71), ("B", generic, 0.5, 0.52)):
        assert numbers[label]["CIDEr"] == cider and numbers[label]["CLIP-S"] == clip_s
        assert numbers[label]["recall_all"] == pytest.approx(truth_metrics(captions, scenes)["recall_all"])
        assert "R@1" not in numbers[label]
    rows = {line.split("|")[1].strip(): line.split("|") for line in (tmp_path / "report" / "report.md").read_text()
            .splitlines() if line.startswith("| A ") or line.startswith("| B ")}
    assert rows["A"][5].strip() == "123.4" and rows["B"][5].strip() == "50.0" and rows["A"][8].strip() == "–"
    assert "Captioning report" not in capsys.readouterr().out  # FineShapes scenes: the FineShapes title


def test_missing_results_and_bad_labels_are_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    image = {"split": "test", "cocoid": 1, "filepath": "", "filename": "1.png", "sentences": [{"raw": "a star"}]}
    (tmp_path / "d.json").write_text(json.dumps({"images": [image]}))
    for args, message in ((["--runs", "x,y", "--labels", "A"], "one distinct label per run"),
                          (["--runs", "x"], "report input missing: eval_results/x_test.json")):
        monkeypatch.setattr(sys, "argv", ["make_report.py", *args, "--dataset_json", str(tmp_path / "d.json"),
                                          "--scenes", "none", "--grammar_clip", "none", "--clipscore_features", "none"])
        with pytest.raises(SystemExit) as e:
            runpy.run_path(TOOL, run_name="__main__")
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_caption_grid_picks_the_images_where_the_models_differ_most(tiny_world_factory):
    from captioning.evaluation.report import grid_images
    from captioning.metrics.truth import caption_facts

    root, _ = tiny_world_factory()
    scenes = load_scenes(root / "s.json")
    test = [im for im in json.loads((root / "dataset.json").read_text())["images"] if im["split"] == "test"]
    refs = {str(im["cocoid"]): im["sentences"][0]["raw"] for im in test}
    ids = list(refs)
    a, b = dict(refs), dict(refs)  # the same captions everywhere but on three images
    b[ids[1]] = "a shape"                               # B states fewer true facts on image 1
    b[ids[4]] = "a circle"                              # and on image 4
    b[ids[6]] = "green green green"                     # B's caption does not parse on images 6 and 7
    b[ids[7]] = "star star"
    rows = {"A": {"captions": a}, "B": {"captions": b}}

    def spread(i: str) -> int:  # true facts stated, counted by the truth metric's own rule
        return abs(sum(caption_facts(a[i], scenes[i])["true"].values())
                   - sum(caption_facts(b[i], scenes[i])["true"].values()))

    picked = grid_images(rows, scenes, ids, 4)
    expected = sorted((i for i in ids if spread(i) > 0), key=lambda i: (-spread(i), ids.index(i)))
    assert all(spread(i) == 0 for i in ids if i not in (ids[1], ids[4], ids[6], ids[7]))
    unparsed = [i for i in picked if i in (ids[6], ids[7])]
    assert len(unparsed) == 1  # at most one image with a caption that does not parse
    assert picked[:3] == [i for i in expected if i not in (ids[6], ids[7]) or i == unparsed[0]][:3]
    assert grid_images(rows, None, ids, 2) == [ids[1], ids[4]]  # no truth: by distinct captions, in order
