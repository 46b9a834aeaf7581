"""Inputs that used to give a wrong result without a complaint now give the right one: image modes,
the checkpoint's decoding settings in tools/caption.py, ViT grids, OpenAI TorchScript files,
re-extraction of changed images, older prepro files."""
from __future__ import annotations

import io
import json
import os
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clip
from captioning.config import Config
from captioning.data.fingerprint import check_df, check_labels, vocab_fingerprint
from captioning.inference import Captioner
from clip.grammar import load_grammar_clip
from clip.images import open_rgb, to_rgb

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)
GREY = RNG.integers(0, 256, (12, 10), dtype=np.uint8)
ALPHA = RNG.integers(0, 256, (12, 10), dtype=np.uint8)


def _roundtrip(image: Image.Image, fmt: str = "PNG") -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, fmt)
    buf.seek(0)
    return Image.open(buf)


def _grey3(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=2)


def _on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None].astype(np.float64) / 255
    return rgb * a + 255 * (1 - a)


@pytest.mark.parametrize("mode", ["1", "L", "I;16", "I", "F", "P", "P+transparency", "RGBA", "LA", "CMYK", "exif"])
def test_every_mode_becomes_the_right_rgb(mode):
    if mode == "1":
        bits = GREY > 127
        image, expected = _roundtrip(Image.fromarray(bits)), _grey3(np.where(bits, 255, 0))
    elif mode == "L":
        image, expected = _roundtrip(Image.fromarray(GREY, "L")), _grey3(GREY)
    elif mode == "I;16":
        image = _roundtrip(Image.fromarray(GREY.astype(np.uint16) * 257))
        assert image.mode == "I;16"
        expected = _grey3(GREY)
    elif mode == "I":
        image, expected = Image.fromarray(GREY.astype(np.int32) * 257, "I"), _grey3(GREY)
    elif mode == "F":
        image, expected = Image.fromarray(GREY.astype(np.float32) / 255, "F"), _grey3(GREY)
    elif mode == "P":
        palette = RGB.reshape(-1, 3)[:64]
        idx = RNG.integers(0, 64, (12, 10), dtype=np.uint8)
        image = Image.fromarray(idx, "P")
        image.putpalette(palette.flatten().tolist())
        expected = palette[idx]
    elif mode == "P+transparency":
        idx = (GREY % 4).astype(np.uint8)
        palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], np.uint8)
        image = Image.fromarray(idx, "P")
        image.putpalette(palette.flatten().tolist())
        image.info["transparency"] = 3
        image = _roundtrip(image)
        expected = np.where((idx == 3)[..., None], 255, palette[idx])
    elif mode == "RGBA":
        image = _roundtrip(Image.fromarray(np.dstack([RGB, ALPHA]), "RGBA"))
        expected = _on_white(RGB, ALPHA)
    elif mode == "LA":
        image = Image.fromarray(np.dstack([GREY, ALPHA]), "LA")
        expected = _on_white(_grey3(GREY), ALPHA)
    elif mode == "CMYK":
        cmyk = np.dstack([255 - RGB, np.zeros((12, 10), np.uint8)])  # K = 0: RGB = 255 - CMY
        image, expected = _roundtrip(Image.fromarray(cmyk, "CMYK"), "TIFF"), RGB
    else:  # EXIF orientation 6: the stored pixels are shown rotated 90 degrees clockwise
        exif = Image.Exif()
        exif[0x0112] = 6
        buf = io.BytesIO()
        Image.fromarray(RGB).save(buf, "PNG", exif=exif)
        buf.seek(0)
        image, expected = Image.open(buf), np.rot90(RGB, k=-1)
    got = np.asarray(to_rgb(image)).astype(np.float64)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1.0


@pytest.fixture(scope="module")
def rn_checkpoint(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("rn"), "resnet", 512, 96)


def _checkpoint(root: Path, family: str, width: int, resolution: int, vocab: dict | None = None,
                **decode) -> Path:
    from captioning.models.configured import build_captioner

    torch.manual_seed(0)
    feature_clip = clip.CLIP(**clip.model.tiny_clip_config(family)).eval()
    torch.save(feature_clip.state_dict(), root / "clip.pt")
    vocab = vocab or {"1": "a", "2": "red", "3": "star", "4": "on", "5": "snow", "6": "square"}
    cfg = Config()
    for k, v in dict(att_feat_size=width, d_model=16, d_ff=32, N_enc=1, N_dec=1, num_att_heads=2,
                     feature_clip_model=str(root / "clip.pt"), feature_resolution=resolution, **decode).items():
        cfg.set(k, v)
    model = build_captioner(cfg, len(vocab))
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"config": cfg.to_flat_dict(), "vocab": vocab}}, root / "m.ckpt")
    return root / "m.ckpt"


def test_16bit_png_captions_like_its_8bit_copy(rn_checkpoint, tmp_path):
    star = np.zeros((64, 64, 3), np.uint8)
    star[20:44, 20:44] = (220, 20, 30)
    grey8 = Image.fromarray(star[..., 0], "L")
    grey8.save(tmp_path / "star8.png")
    Image.fromarray(star[..., 0].astype(np.uint16) * 257).save(tmp_path / "star16.png")
    captioner = Captioner.from_checkpoint(rn_checkpoint, device="cpu")
    f8, f16 = captioner.features([tmp_path / "star8.png"]), captioner.features([tmp_path / "star16.png"])
    torch.testing.assert_close(f16, f8)
    saturated = captioner.features([Image.open(tmp_path / "star16.png").convert("RGB")])  # the old way
    assert not torch.allclose(saturated, f8)
    assert captioner.caption([tmp_path / "star16.png"]) == captioner.caption([tmp_path / "star8.png"])


def test_decompression_bomb_limit_can_be_raised(tmp_path):
    Image.new("RGB", (300, 200)).save(tmp_path / "big.png")
    previous = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = 1000
        with pytest.raises(ValueError, match="1000 pixels"):
            open_rgb(tmp_path / "big.png")
        Image.MAX_IMAGE_PIXELS = 60000
        assert open_rgb(tmp_path / "big.png").size == (300, 200)
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def test_vit_grid_captioner_works_in_tools_caption(tmp_path, capsys):
    vit = clip.model.tiny_clip_config("vit")
    ckpt = _checkpoint(tmp_path, "vit", vit["vision_width"], vit["image_resolution"])
    feature_clip = clip.CLIP(**vit).eval()
    feature_clip.load_state_dict(torch.load(tmp_path / "clip.pt", weights_only=True))
    Image.fromarray(RGB).save(tmp_path / "x.png")
    main = runpy.run_path(str(ROOT / "tools" / "caption.py"))["main"]
    assert main([str(tmp_path / "x.png"), "--ckpt", str(ckpt), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out.strip().split("\t")[1]
    captioner = Captioner.from_checkpoint(ckpt, device="cpu")
    x = clip.transforms.grid_preprocess(vit["image_resolution"])(Image.fromarray(RGB))[None]
    with torch.no_grad():
        tokens = feature_clip.visual.forward_tokens(x)  # independent: patch tokens, class token dropped
    feats = tokens[:, 1:]
    from captioning.models import decode_sequence, sample
    expected = decode_sequence(captioner.vocab, sample(captioner.model, feats, None).seq)[0]
    assert printed == expected
    assert captioner.features([Image.fromarray(RGB)]).shape == feats.shape


def test_caption_follows_the_checkpoints_decoding_settings(tmp_path):
    ckpt = _checkpoint(tmp_path, "resnet", 512, 96, beam_size=3, block_trigrams=1, remove_bad_endings=1)
    captioner = Captioner.from_checkpoint(ckpt, device="cpu")
    assert (captioner.cfg.decode.beam_size, captioner.cfg.decode.block_trigrams,
            captioner.cfg.decode.remove_bad_endings) == (3, 1, 1)
    assert Captioner.from_checkpoint(ckpt, beam_size=1, device="cpu").cfg.decode.beam_size == 1


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_openai_torchscript_file_is_a_reward_clip(tmp_path):
    torch.manual_seed(0)
    model = clip.CLIP(**clip.tiny_clip_config("resnet")).eval()
    images, tokens = torch.randn(2, 3, 64, 64), clip.tokenize(["a red star", "snow"], context_length=32)
    torch.jit.save(torch.jit.trace(model, (images, tokens), check_trace=False), str(tmp_path / "jit.pt"))
    loaded = load_grammar_clip(tmp_path / "jit.pt")
    assert loaded.grammar_head is None
    with torch.no_grad():
        torch.testing.assert_close(loaded.clip.encode_text(tokens), model.encode_text(tokens))


def test_changed_images_are_noticed_and_redo_reextracts(tmp_path, capsys):
    torch.manual_seed(0)
    torch.save(clip.CLIP(**clip.tiny_clip_config("resnet")).eval().state_dict(), tmp_path / "clip.pt")
    images = tmp_path / "img"
    images.mkdir()
    for k in range(3):
        Image.fromarray(np.full((40, 40, 3), 60 * k, np.uint8)).save(images / f"{k}.png")
    (tmp_path / "list.json").write_text(json.dumps({"images": [{"id": k, "file_path": f"{k}.png"} for k in range(3)]}))
    main = runpy.run_path(str(ROOT / "scripts" / "clip_prepro_feats.py"))["main"]
    argv = ["--input_json", str(tmp_path / "list.json"), "--images_root", str(images), "--clip_model",
            str(tmp_path / "clip.pt"), "--output_dir", str(tmp_path / "f"), "--num_workers", "0", "--quiet",
            "--resolution", "64"]
    assert main(argv) == 0
    before = np.load(tmp_path / "f_clip_clip_att" / "1.npz")["feat"]
    Image.fromarray(np.full((40, 40, 3), 250, np.uint8)).save(images / "1.png")
    os.utime(images / "1.png", ns=(1, 1))
    capsys.readouterr()
    assert main(argv) == 2
    assert "ids ['1']" in capsys.readouterr().err
    assert main([*argv, "--redo"]) == 0
    after = np.load(tmp_path / "f_clip_clip_att" / "1.npz")["feat"]
    assert not np.allclose(before, after)
    assert main(argv) == 0  # the manifest now holds the new file's stats


def test_old_files_without_fingerprint_get_a_notice(tmp_path, capsys):
    vocab = {"1": "a", "2": "b"}
    check_labels("t.json", vocab, "t.h5", {}, np.array([[1, 2, 0]]))
    assert capsys.readouterr().err.startswith("notice:")
    check_labels("t.json", vocab, "t.h5", {"vocab_fingerprint": vocab_fingerprint(vocab)}, np.array([[1, 2]]))
    assert capsys.readouterr().err == ""
    check_df("d.p", {"document_frequency": {("1", "0"): 1.0}, "ref_len": 1}, vocab)
    assert capsys.readouterr().err.startswith("notice:")
    with pytest.raises(ValueError, match="word n-grams"):
        check_df("d.p", {"document_frequency": {("a", "<eos>"): 1.0}, "ref_len": 1}, vocab)
    assert vocab_fingerprint(vocab) != vocab_fingerprint({"1": "b", "2": "a"})


def test_tools_caption_writes_exactly_the_captions_evaluate_wrote(tiny_world_factory, tmp_path, monkeypatch, capsys):
    """Same checkpoint, same caption: features extracted with a tiny CLIP, a short run with non-default
    decoding settings, EVALUATE=1 on the test split, then tools/caption.py on the same test images."""
    world, cfg_path = tiny_world_factory()
    torch.manual_seed(0)
    torch.save(clip.CLIP(**clip.tiny_clip_config("resnet")).eval().state_dict(), tmp_path / "clip.pt")
    extract = runpy.run_path(str(ROOT / "scripts" / "clip_prepro_feats.py"))["main"]
    assert extract(["--input_json", str(world / "talk.json"), "--images_root", str(world), "--clip_model",
                    str(tmp_path / "clip.pt"), "--output_dir", str(tmp_path / "f"), "--format", "packed",
                    "--num_workers", "0", "--quiet", "--resolution", "64"]) == 0
    cfg = tmp_path / "run.yml"
    cfg.write_text(cfg_path.read_text().replace(str(world / "att.npy"), str(tmp_path / "f_clip_clip_att.npy"))
                   .replace("att_feat_size: 8", "att_feat_size: 512")
                   + f"feature_clip_model: {tmp_path / 'clip.pt'}\nfeature_resolution: 64\nbeam_size: 2\n"
                     "block_trigrams: 1\nremove_bad_endings: 1\ndecoding_constraint: 1\n")
    monkeypatch.chdir(tmp_path)
    train = runpy.run_path(str(ROOT / "tools" / "train_pl.py"))["main"]
    argv = ["--cfg", str(cfg), "--id", "same", "--checkpoint_path", str(tmp_path / "save"), "--accelerator", "cpu"]
    assert train(argv) == 0
    assert train([*argv, "--evaluate"]) == 0
    written = json.loads((tmp_path / "eval_results" / "same_test.json").read_text())["imgToEval"]
    images = {str(im["id"]): world / im["file_path"]
              for im in json.loads((world / "talk.json").read_text())["images"] if im["split"] == "test"}
    assert set(written) == set(images)
    caption = runpy.run_path(str(ROOT / "tools" / "caption.py"))["main"]
    capsys.readouterr()
    ids = sorted(images)
    assert caption([str(images[i]) for i in ids] + ["--ckpt", str(tmp_path / "save" / "same-last.ckpt"),
                                                    "--device", "cpu"]) == 0
    printed = [line.split("\t")[1] for line in capsys.readouterr().out.strip().splitlines()]
    assert printed == [written[i]["caption"] for i in ids]
    # the settings matter for this checkpoint: plain greedy decoding (what tools/caption.py did) differs
    from captioning.models import decode_sequence, sample
    captioner = Captioner.from_checkpoint(tmp_path / "save" / "same-last.ckpt", device="cpu")
    with torch.inference_mode():
        seq = sample(captioner.model, captioner.features([images[i] for i in ids]), None, method="greedy").seq
    assert decode_sequence(captioner.vocab, seq) != printed
