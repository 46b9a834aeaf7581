"""tools/caption.py / captioning.inference: captions for PNG and odd-sized JPEG files, clear errors otherwise."""
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clip
from captioning.config import Config
from captioning.inference import Captioner
from captioning.models import decode_sequence, sample
from captioning.models.configured import build_captioner

CAPTION_TOOL = str(Path(__file__).resolve().parents[1] / "tools" / "caption.py")
VOCAB = {"1": "a", "2": "red", "3": "circle", "4": "on", "5": "grass"}


@pytest.fixture()
def checkpoint(tmp_path):
    torch.manual_seed(0)
    feature_clip = clip.CLIP(**clip.model.tiny_clip_config("resnet")).eval()
    torch.save(feature_clip.state_dict(), tmp_path / "clip.pt")
    cfg = Config()
    for k, v in dict(att_feat_size=512, d_model=16, d_ff=32, N_enc=1, N_dec=1, num_att_heads=2,
                     feature_clip_model=str(tmp_path / "clip.pt"), feature_resolution=96).items():
        cfg.set(k, v)
    model = build_captioner(cfg, len(VOCAB)).eval()
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"config": cfg.to_flat_dict(), "vocab": VOCAB}},
               tmp_path / "m.ckpt")
    return tmp_path, model, feature_clip


def test_captions_match_the_model_on_direct_features(checkpoint):
    root, model, feature_clip = checkpoint
    rng = np.random.default_rng(0)
    png = root / "a.png"
    Image.fromarray(rng.integers(0, 255, (70, 50, 3), dtype=np.uint8)).save(png)
    jpg = root / "b.jpg"
    Image.fromarray(rng.integers(0, 255, (33, 101, 3), dtype=np.uint8)).save(jpg)
    captioner = Captioner.from_checkpoint(root / "m.ckpt", device="cpu")
    got = captioner.caption([png, jpg])
    # independent path: preprocess, grid, reshape and decode by hand
    pre = clip.transforms.grid_preprocess(96)
    x = torch.stack([pre(Image.open(png).convert("RGB")), pre(Image.open(jpg).convert("RGB"))])
    with torch.no_grad():
        grid = feature_clip.visual_grid(x)                       # (2, 512, 3, 3)
        feats = grid.permute(0, 2, 3, 1).reshape(2, 9, 512)
        expected = decode_sequence(VOCAB, sample(model, feats, None).seq)
    assert got == expected and all(isinstance(c, str) for c in got)


def test_cli_prints_and_writes_json(checkpoint, capsys, monkeypatch):
    root, _, _ = checkpoint
    Image.new("RGB", (40, 60), (200, 10, 10)).save(root / "c.png")
    monkeypatch.setattr(sys, "argv", ["caption.py", str(root / "c.png"), "--ckpt", str(root / "m.ckpt"),
                                      "--json", str(root / "out.json"), "--device", "cpu"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(CAPTION_TOOL, run_name="__main__")
    assert e.value.code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(root / "c.png") + "\t")
    assert (root / "out.json").is_file()


def test_non_image_file_is_a_clear_error(checkpoint, capsys, monkeypatch):
    root, _, _ = checkpoint
    (root / "notes.txt").write_text("not an image")
    monkeypatch.setattr(sys, "argv", ["caption.py", str(root / "notes.txt"), "--ckpt", str(root / "m.ckpt"),
                                      "--device", "cpu"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(CAPTION_TOOL, run_name="__main__")
    assert e.value.code == 2
    assert "is not a readable image" in capsys.readouterr().err
