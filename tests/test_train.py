"""tools/train_pl.py end to end on a tiny FineShapes world with random features."""
import json

import numpy as np
import pytest
import torch

from captioning.data.features import write_packed
from captioning.data.prepro import prepro_labels
from captioning.fineshapes.dataset import FineShapesPaths, FineShapesSpec, generate
from captioning.training import run as train_pl


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    paths = FineShapesPaths(images_dir=root / "images", dataset_json=root / "dataset.json", eval_json=root / "e.json",
                            eval_csv=root / "e.csv", scenes_json=root / "s.json")
    generate(FineShapesSpec(n_train=30, n_restval=0, n_val=8, n_test=8, n_eval=0, image_size=32), paths,
             progress=False, workers=1)
    prepro_labels(paths.dataset_json, root / "talk.json", root / "talk", word_count_threshold=0)
    ids = [im["id"] for im in json.loads((root / "talk.json").read_text())["images"]]
    rng = np.random.default_rng(0)
    write_packed(root / "att.npy", ids, rng.standard_normal((len(ids), 4, 8)).astype(np.float32))
    cfg = root / "tiny.yml"
    cfg.write_text(f"""
input_json: {root / 'talk.json'}
input_label_h5: {root / 'talk_label.h5'}
input_att_dir: {root / 'att.npy'}
input_ref_json: {paths.dataset_json}
att_feat_size: 8
N_enc: 1
N_dec: 1
d_model: 16
d_ff: 32
num_att_heads: 2
batch_size: 10
num_workers: 0
max_epochs: 1
noamopt: true
noamopt_warmup: 10
language_eval: 0
""")
    return root, cfg


def run(cfg, tmp_path, *args, monkeypatch=None):
    return train_pl.main(["--cfg", str(cfg), "--checkpoint_path", str(tmp_path / "save"), *args])


def test_train_resume_and_evaluate(world, tmp_path, monkeypatch):
    root, cfg = world
    monkeypatch.chdir(tmp_path)
    assert run(cfg, tmp_path, "--id", "t") == 0
    last = tmp_path / "save" / "t-last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 3 and ckpt["epoch"] == 0  # 30 images / 10 per batch
    assert set(ckpt["hyper_parameters"]) == {"config", "vocab"}
    assert (tmp_path / "save" / "t.yml").is_file() and (tmp_path / "save" / "t-best.ckpt").is_file()
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
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        run(cfg, tmp_path, "--id", "u", "--init_from", str(tmp_path / "nope.ckpt"))
    with pytest.raises(FileNotFoundError, match="--resume: checkpoint not found"):
        run(cfg, tmp_path, "--id", "u", "--resume", str(tmp_path / "nope.ckpt"))
    assert run(cfg, tmp_path, "--id", "u", "--evaluate") == 2
    assert "nothing to evaluate" in capsys.readouterr().err


def test_config_errors_exit_cleanly(world, tmp_path, capsys):
    _, cfg = world
    assert run(cfg, tmp_path, "--id", "v", "--batch_sise", "3") == 2
    assert "did you mean 'batch_size'" in capsys.readouterr().err
