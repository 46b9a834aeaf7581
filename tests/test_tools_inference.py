"""tools/finecapeval_inference.py: captions every test image with a trained checkpoint."""
import json
import runpy
import sys
from pathlib import Path

import pytest

from captioning.training import run as train_pl

TOOL = str(Path(__file__).resolve().parents[1] / "tools" / "finecapeval_inference.py")


def run_tool(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["finecapeval_inference.py", *args])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(TOOL, run_name="__main__")
    return e.value.code


def test_inference_writes_one_caption_per_test_image(tiny_world_factory, tmp_path, monkeypatch):
    root, cfg = tiny_world_factory(n_train=30)
    monkeypatch.chdir(tmp_path)
    assert train_pl.main(["--cfg", str(cfg), "--id", "m", "--checkpoint_path", str(tmp_path / "save")]) == 0
    ckpt = tmp_path / "save" / "m-last.ckpt"
    assert run_tool(monkeypatch, "--cfg", str(cfg), "--ckpt", str(ckpt), "--id", "m") == 0
    captions = json.loads((tmp_path / "FineCapEval_results" / "m.json").read_text())
    test_ids = {str(im["id"]) for im in json.loads((root / "talk.json").read_text())["images"] if im["split"] == "test"}
    assert set(captions) == test_ids and all(isinstance(c, str) for c in captions.values())
    # the same captions as the training module's own test pass
    monkeypatch.setenv("EVALUATE", "1")
    assert train_pl.main(["--cfg", str(cfg), "--id", "m", "--checkpoint_path", str(tmp_path / "save")]) == 0
    tested = json.loads((tmp_path / "eval_results" / "m_test.json").read_text())["imgToEval"]
    assert {k: v["caption"] for k, v in tested.items()} == captions


def test_missing_checkpoint_is_a_clear_error(tiny_world_factory, tmp_path, monkeypatch, capsys):
    _, cfg = tiny_world_factory(n_train=30)
    monkeypatch.chdir(tmp_path)
    assert run_tool(monkeypatch, "--reward", "clips_cider") == 2
    assert "configs/phase2/FineCapEval_clipRN50_cider_clips.yml" in capsys.readouterr().err
    assert run_tool(monkeypatch, "--cfg", str(cfg), "--id", "x") == 2
    assert "checkpoint not found: save/x/x-last.ckpt" in capsys.readouterr().err
