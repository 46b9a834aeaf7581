"""Determinism and bad-input handling of training (kill-and-resume: tests/test_runs.py)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from captioning.training import run as train_pl

TRAIN = str(Path(__file__).resolve().parents[1] / "tools" / "train_pl.py")


def test_short_mle_run_is_bit_for_bit_repeatable(tiny_world_factory, tmp_path, monkeypatch):
    _, cfg = tiny_world_factory(n_train=30)
    monkeypatch.chdir(tmp_path)
    states = []
    for run_id in ("a", "b"):
        assert train_pl.main(["--cfg", str(cfg), "--id", run_id, "--checkpoint_path", str(tmp_path / run_id),
                              "--max_epochs", "2"]) == 0
        states.append(torch.load(tmp_path / run_id / f"{run_id}-last.ckpt", weights_only=True)["state_dict"])
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def _tiny_copy(tiny_world_factory, tmp_path, **changes):
    """The tiny world's config with some keys changed, written to tmp_path."""
    _, cfg = tiny_world_factory(n_train=30)
    text = cfg.read_text()
    for key, value in changes.items():
        text = "\n".join(line for line in text.splitlines() if not line.startswith(f"{key}:")) + f"\n{key}: {value}\n"
    path = tmp_path / "cfg.yml"
    path.write_text(text)
    return path


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tiny_world_factory, tmp_path, monkeypatch,
                                                                     capsys):
    import numpy as np

    from captioning.data.features import PackedFeatures, write_packed

    root, _ = tiny_world_factory(n_train=30)
    good = PackedFeatures(root / "att.npy")
    ids = good.manifest["ids"]
    feats = np.stack([good[i] for i in ids])
    feats[:] = np.nan
    write_packed(tmp_path / "nan.npy", ids, feats)
    monkeypatch.chdir(tmp_path)
    args = ["--cfg", str(_tiny_copy(tiny_world_factory, tmp_path)), "--id", "n", "--checkpoint_path", "save"]
    assert train_pl.main(args) == 0                        # one good epoch: a checkpoint exists
    before = (tmp_path / "save" / "n-last.ckpt").read_bytes()
    rc = train_pl.main(args + ["--resume", "auto", "--max_epochs", "2", "--input_att_dir", str(tmp_path / "nan.npy")])
    err = capsys.readouterr().err
    assert rc == 1 and "non-finite training loss (nan) at global step 3" in err
    assert "the last good checkpoint is save/n-last.ckpt" in err
    assert (tmp_path / "save" / "n-last.ckpt").read_bytes() == before


def test_feature_width_mismatch_is_a_clear_error(tiny_world_factory, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = _tiny_copy(tiny_world_factory, tmp_path, att_feat_size=2048)
    assert train_pl.main(["--cfg", str(cfg), "--id", "w", "--checkpoint_path", "save"]) == 2
    err = capsys.readouterr().err
    assert "width 8" in err and "att_feat_size 2048" in err and "Traceback" not in err


def test_unwritable_output_folder(tiny_world_factory, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("")
    cfg = _tiny_copy(tiny_world_factory, tmp_path)
    assert train_pl.main(["--cfg", str(cfg), "--id", "u", "--checkpoint_path", "a_file/save"]) == 2
    assert "cannot write to output folder a_file/save" in capsys.readouterr().err


def test_checkpoint_with_another_vocabulary_is_refused(tiny_world_factory, tmp_path, monkeypatch, capsys):
    import json

    root, _ = tiny_world_factory(n_train=30)
    monkeypatch.chdir(tmp_path)
    cfg = _tiny_copy(tiny_world_factory, tmp_path)
    assert train_pl.main(["--cfg", str(cfg), "--id", "v", "--checkpoint_path", "save"]) == 0
    info = json.loads((root / "talk.json").read_text())
    info["ix_to_word"]["1"] = "zebra"
    (tmp_path / "other.json").write_text(json.dumps(info))
    rc = train_pl.main(["--cfg", str(cfg), "--id", "v", "--checkpoint_path", "save", "--evaluate",
                        "--input_json", str(tmp_path / "other.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "different vocabulary" in err and "Traceback" not in err


def test_non_ascii_and_over_long_captions_reach_clip_truncated():
    import clip
    from captioning.metrics.clipscore import CLIPScorer
    from clip.grammar import GrammarCLIP

    torch.manual_seed(0)
    model = GrammarCLIP(clip.CLIP(**clip.model.tiny_clip_config("resnet")).eval())
    reward = CLIPScorer(model)
    long = " ".join(["a small red circle left of a large blue square"] * 20)   # far beyond 32 tokens
    captions = [long, "ein grüner Würfel über einem Kreis ☃", ""]
    with pytest.raises(ValueError, match="more than the context length 32"):
        clip.tokenize([long], context_length=model.clip.context_length)        # the plain tokenizer refuses it
    pooled, emb = reward.encode(captions)
    assert emb.shape[0] == 3 and torch.isfinite(emb).all()
    scores = reward.clip_s(torch.nn.functional.normalize(torch.randn(3, emb.shape[1]), dim=-1), emb)
    assert torch.isfinite(scores).all() and (scores >= 0).all() and (scores <= 2.5).all()


@pytest.mark.slow
def test_two_process_ddp_mle_and_scst_match_single_process(tiny_world_factory, tmp_path):
    import json

    from captioning.data.prepro import prepro_ngrams

    root, _ = tiny_world_factory(n_train=30)
    prepro_ngrams(root / "dataset.json", root / "talk.json", str(tmp_path / "df"), "train")
    cfg = _tiny_copy(tiny_world_factory, tmp_path, language_eval=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]

    def train(*args):
        result = subprocess.run([sys.executable, TRAIN, "--cfg", str(cfg), "--checkpoint_path", "save", *args],
                                cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]

    train("--id", "d_mle", *ddp)
    train("--id", "d_rl", *ddp, "--init_from", "save/d_mle-last.ckpt", "--self_critical_after", "0",
          "--noamopt", "false", "--learning_rate", "1e-4", "--cached_tokens", str(tmp_path / "df-idxs.p"))
    val = json.loads((tmp_path / "eval_results" / "d_rl_val.json").read_text())
    assert len(val["imgToEval"]) == 8 and "CIDEr" in val["overall"]      # every val image, once
    train("--id", "d_rl", *ddp, "--evaluate")
    two = json.loads((tmp_path / "eval_results" / "d_rl_test.json").read_text())
    train("--id", "d_rl", "--evaluate")
    one = json.loads((tmp_path / "eval_results" / "d_rl_test.json").read_text())
    assert {k: v["caption"] for k, v in two["imgToEval"].items()} == {k: v["caption"] for k, v in one["imgToEval"].items()}
    assert two["overall"]["CIDEr"] == pytest.approx(one["overall"]["CIDEr"])


def test_features_from_another_clip_or_resolution_are_refused(tiny_world_factory, tmp_path, monkeypatch, capsys):
    import numpy as np

    from captioning.data.features import PackedFeatures, write_packed

    root, _ = tiny_world_factory(n_train=30)
    good = PackedFeatures(root / "att.npy")
    ids = good.manifest["ids"]
    feats = np.stack([good[i] for i in ids])
    monkeypatch.chdir(tmp_path)
    cfg = _tiny_copy(tiny_world_factory, tmp_path)
    args = ["--cfg", str(cfg), "--id", "f", "--checkpoint_path", "save", "--feature_clip_model", "RN50",
            "--feature_resolution", "448"]
    for name, model, resolution, expected in [("res.npy", "RN50", 224, "extracted at 224 px"),
                                              ("model.npy", "ViT-B/32", 448, "extracted with CLIP 'ViT-B/32'")]:
        write_packed(tmp_path / name, ids, feats, model=model, config={"resolution": resolution})
        assert train_pl.main([*args, "--input_att_dir", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.count("error:") == 1 and expected in err and "Traceback" not in err
    write_packed(tmp_path / "same.npy", ids, feats, model="RN50", config={"resolution": 448})
    assert train_pl.main([*args, "--input_att_dir", str(tmp_path / "same.npy")]) == 0


def _same_rows(a: list, b: list) -> bool:
    """Equal rows, key order, value types and float bits included (NaN equals NaN)."""
    import math
    import struct

    def same(x, y):
        if type(x) is not type(y):
            return False
        if isinstance(x, float):
            return (math.isnan(x) and math.isnan(y)) or struct.pack("<d", x) == struct.pack("<d", y)
        return x == y

    return len(a) == len(b) and all(list(r) == list(s) and all(same(r[k], s[k]) for k in r) for r, s in zip(a, b))


def _eval_rows():
    return [
        {"image_id": 7, "caption": 'ein grüner Würfel über einem Kreis ☃ 🐱 "quoted" \\ back\nslash\t',
         "perplexity": 0.1 + 0.2, "entropy": float("nan"), "CLIP-S": -0.0},
        {"image_id": "7", "caption": "", "perplexity": float("inf"), "entropy": 5e-324,
         "CLIP-S": 1.7976931348623157e308},
        {"image_id": "COCO_val2014_000000000042.jpg", "caption": "a dog", "perplexity": -float("inf"),
         "entropy": 2 / 3, "CLIP-S": 1e-310},
        {"image_id": 2**62 + 1, "caption": "日本語のキャプション", "perplexity": 12.0, "entropy": 1.0000000000000002},
    ]


def test_eval_rows_cross_processes_exactly_as_json_bytes():
    from captioning.training.caption_eval import decode_rows, encode_rows

    rows = _eval_rows()
    data = encode_rows(rows)
    assert data.dtype == torch.uint8 and data.dim() == 1
    assert _same_rows(decode_rows(data), rows)
    assert _same_rows(decode_rows(torch.cat([data, torch.zeros(5, dtype=torch.uint8)])[:len(data)]), rows)
    with pytest.raises(TypeError):
        encode_rows([{"image_id": torch.tensor(1)}])          # not JSON: refused, never silently changed


def test_gather_rows_keeps_rank_order_types_and_the_first_row_of_each_image():
    """Two ranks (threads standing in for processes) with rows of different byte lengths; the
    strategy's all_gather, like Lightning's, stacks same-shape tensors and refuses others."""
    import threading
    from types import SimpleNamespace

    from captioning.training.caption_eval import gather_rows

    barrier, slots = threading.Barrier(2), [None, None]

    class Strategy:
        root_device = torch.device("cpu")

        def __init__(self, rank):
            self.rank = rank

        def all_gather(self, t):
            slots[self.rank] = t.clone()
            barrier.wait()
            out = torch.stack(slots)
            barrier.wait()
            return out

    rows = _eval_rows()
    repeat = {**rows[0], "caption": "a padding repeat of image 7"}
    per_rank = [[rows[0], rows[2]], [rows[1], repeat, rows[3]]]
    results = [None, None]

    def rank(r):
        results[r] = gather_rows(per_rank[r], SimpleNamespace(world_size=2, strategy=Strategy(r)))

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    expected = [rows[0], rows[2], rows[1], rows[3]]             # rank order; int 7 and "7" are two images
    assert _same_rows(results[0], expected) and _same_rows(results[1], expected)
    one = gather_rows([rows[0], repeat, rows[1]], SimpleNamespace(world_size=1, strategy=None))
    assert len(one) == 2 and one[0] is rows[0] and one[1] is rows[1]   # one process: no encoding, no copies
