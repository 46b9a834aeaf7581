"""tools/train_pl.py end to end on a tiny FineShapes world with random features."""
import json

import pytest
import torch

from captioning.training import run as train_pl


@pytest.fixture(scope="module")
def world(tiny_world_factory):
    return tiny_world_factory(n_train=30)


def run(cfg, tmp_path, *args, monkeypatch=None):
    return train_pl.main(["--cfg", str(cfg), "--checkpoint_path", str(tmp_path / "save"), *args])


@pytest.mark.slow
def test_train_resume_and_evaluate(world, tmp_path, monkeypatch):
    root, cfg = world
    monkeypatch.chdir(tmp_path)
    assert run(cfg, tmp_path, "--id", "t") == 0
    last = tmp_path / "save" / "t-last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 3 and ckpt["epoch"] == 0  # 30 images / 10 per batch
    assert set(ckpt["hyper_parameters"]) == {"config", "vocab"}
    assert (tmp_path / "save" / "t.yml").is_file() and (tmp_path / "save" / "t-best.ckpt").is_file()
    assert list((tmp_path / "save" / "logs").rglob("metrics.csv"))            # CSV log
    assert list((tmp_path / "save" / "tb").rglob("events.out.tfevents.*"))   # TensorBoard log
    assert json.loads((tmp_path / "eval_results" / "t_val.json").read_text())["imgToEval"]

    # resume continues the trainer state: step count and optimiser moments
    assert run(cfg, tmp_path, "--id", "t", "--resume", "auto", "--max_epochs", "2") == 0
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == 6 and resumed["epoch"] == 1
    assert resumed["optimizer_states"][0]["state"][0]["step"] == 6

    # EVALUATE=1 tests the last checkpoint and writes every metric
    monkeypatch.setenv("EVALUATE", "1")
    assert run(cfg, tmp_path, "--id", "t", "--language_eval", "1") == 0
    result = json.loads((tmp_path / "eval_results" / "t_test.json").read_text())
    for key in ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "perplexity", "entropy", "distinct_1"):
        assert key in result["overall"], key
    assert len(result["imgToEval"]) == 8


def test_missing_checkpoints_are_errors(world, tmp_path, monkeypatch, capsys):
    _, cfg = world
    monkeypatch.chdir(tmp_path)
    assert run(cfg, tmp_path, "--id", "u", "--init_from", str(tmp_path / "nope.ckpt")) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert run(cfg, tmp_path, "--id", "u", "--resume", str(tmp_path / "nope.ckpt")) == 2
    assert "--resume: checkpoint not found" in capsys.readouterr().err
    assert run(cfg, tmp_path, "--id", "u", "--evaluate") == 2
    assert "nothing to evaluate" in capsys.readouterr().err


def test_config_errors_exit_cleanly(world, tmp_path, capsys):
    _, cfg = world
    assert run(cfg, tmp_path, "--id", "v", "--batch_sise", "3") == 2
    assert "did you mean 'batch_size'" in capsys.readouterr().err
