"""tools/clipscore.py: jmhessel/clipscore's command line, numbers equal to the evaluation's CLIP-S.

The independent side is the evaluation path: CLIP-S image embeddings written by
scripts/clipscore_prepro_feats.py and CaptionerModule.clip_metrics, the numbers val/test log.
"""
import json
import runpy
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from captioning.config import Config
from captioning.data.extract import clipscore_main
from captioning.data.features import open_features
from captioning.models import decode_sequence
from captioning.training.module import CaptionerModule

ROOT = Path(__file__).resolve().parents[1]
TOOL = str(ROOT / "tools" / "clipscore.py")
CLIP = str(ROOT / "retrieval" / "pretrained" / "fineshapes_clip.pt")


@pytest.fixture(scope="module")
def scored(tiny_world_factory, tmp_path_factory):
    """Candidates (each image's first reference with a word dropped), references (the others) and the
    evaluation's metrics for them, by image file stem."""
    root, _ = tiny_world_factory()
    out = tmp_path_factory.mktemp("clipscore")
    talk = json.loads((root / "talk.json").read_text())
    vocab = talk["ix_to_word"]
    assert clipscore_main(["--input_json", str(root / "dataset.json"), "--images_root", str(root),
                           "--clip_model", CLIP, "--output_dir", str(out / "w"), "--format", "packed",
                           "--num_workers", "0", "--device", "cpu", "--quiet"]) == 0
    store = open_features(out / "w_clipscore_vis.npy")
    with h5py.File(root / "talk_label.h5") as h5:
        labels, start, end = h5["labels"][:], h5["label_start_ix"][:], h5["label_end_ix"][:]
    stems, cands, gts, feats = [], [], [], []
    for k, im in enumerate(talk["images"]):
        rows = labels[start[k] - 1 : end[k]].astype(np.int64)
        first = decode_sequence(vocab, torch.as_tensor(rows[:1]))[0].split()
        stems.append(Path(im["file_path"]).stem)
        cands.append(" ".join(first[: max(1, len(first) - 1 - k % 3)]))
        gts.append(rows[1:])
        feats.append(np.asarray(store[im["id"]], np.float32))
    cfg = Config()
    for key, v in dict(d_model=16, d_ff=32, N_enc=1, N_dec=1, num_att_heads=2, att_feat_size=8,
                       clip_model=CLIP).items():
        cfg.set(key, v)
    module = CaptionerModule(cfg.to_flat_dict(), vocab)
    metrics = module.clip_metrics({"clip_vis_feats": torch.from_numpy(np.stack(feats)), "gts": gts}, cands)
    refs = [decode_sequence(vocab, torch.as_tensor(g)) for g in gts]
    (out / "cands.json").write_text(json.dumps(dict(zip(stems, cands))))
    (out / "refs.json").write_text(json.dumps(dict(zip(stems, refs))))
    expected = {s: {"CLIPScore": float(metrics["CLIP-S"][i]), "RefCLIPScore": float(metrics["RefCLIP-S-Hessel"][i])}
                for i, s in enumerate(stems)}
    return root / "images", out, expected


def run_tool(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["clipscore.py", *args])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(TOOL, run_name="__main__")
    return e.value.code


def test_scores_equal_the_evaluation_metric(scored, monkeypatch, capsys):
    images, out, expected = scored
    code = run_tool(monkeypatch, str(out / "cands.json"), str(images), "--references_json", str(out / "refs.json"),
                    "--compute_other_ref_metrics", "0", "--save_per_instance", str(out / "per.json"),
                    "--clip_model", CLIP, "--device", "cpu", "--batch_size", "7")
    assert code == 0
    per = json.loads((out / "per.json").read_text())
    assert per.keys() == expected.keys()
    for stem, want in expected.items():
        assert per[stem]["CLIPScore"] == pytest.approx(want["CLIPScore"], abs=1e-4)
        assert per[stem]["RefCLIPScore"] == pytest.approx(want["RefCLIPScore"], abs=1e-4)
    assert len({round(v["CLIPScore"], 4) for v in per.values()}) > 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [f"CLIPScore: {np.mean([v['CLIPScore'] for v in expected.values()]):.4f}",
                     f"RefCLIPScore: {np.mean([v['RefCLIPScore'] for v in expected.values()]):.4f}"]


def test_without_references_prints_clipscore_only(scored, monkeypatch, capsys):
    images, out, expected = scored
    assert run_tool(monkeypatch, str(out / "cands.json"), str(images), "--clip_model", CLIP, "--device", "cpu") == 0
    assert capsys.readouterr().out.strip() == \
        f"CLIPScore: {np.mean([v['CLIPScore'] for v in expected.values()]):.4f}"


def test_other_reference_metrics_are_the_coco_caption_ones(scored, monkeypatch, capsys):
    from captioning.metrics import language_eval

    images, out, _ = scored
    assert run_tool(monkeypatch, str(out / "cands.json"), str(images), "--references_json", str(out / "refs.json"),
                    "--compute_other_ref_metrics", "--clip_model", CLIP, "--device", "cpu") == 0
    printed = dict(line.split(": ") for line in capsys.readouterr().out.strip().splitlines())
    cands, refs = json.loads((out / "cands.json").read_text()), json.loads((out / "refs.json").read_text())
    overall = language_eval([{"image_id": i, "caption": c} for i, c in cands.items()], refs, spice=False)["overall"]
    assert float(printed["BLEU-4"]) == pytest.approx(overall["Bleu_4"], abs=1e-4)
    assert float(printed["CIDER"]) == pytest.approx(overall["CIDEr"], abs=1e-4)
    assert list(printed)[:4] == ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"] and list(printed)[-2:] == [
        "CLIPScore", "RefCLIPScore"]


def test_missing_candidate_and_bad_output_name_are_errors(scored, monkeypatch, capsys, tmp_path):
    images, out, expected = scored
    partial = dict(list(json.loads((out / "cands.json").read_text()).items())[1:])
    (tmp_path / "c.json").write_text(json.dumps(partial))
    assert run_tool(monkeypatch, str(tmp_path / "c.json"), str(images), "--clip_model", CLIP) == 2
    assert "have no entry in the candidates JSON" in capsys.readouterr().err
    assert run_tool(monkeypatch, str(out / "cands.json"), str(images), "--save_per_instance", "x.txt") == 2
    assert capsys.readouterr().err.startswith("error: ")
