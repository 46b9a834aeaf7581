"""retrieval/train_pl.py end to end on a tiny FineShapes world: pretraining and grammar fine-tuning."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import clip
from captioning.config import ConfigError, load_config
from captioning.fineshapes.dataset import FineShapesPaths, FineShapesSpec, generate
from clip.grammar import load_grammar_clip
from retrieval import run
from retrieval.config import CONFIG_DIR, RetrievalConfig

TINY = dict(embed_dim=32, image_resolution=32, vision_layers=(1, 1, 1, 1), vision_width=8, vision_patch_size=None,
            context_length=48, vocab_size=49408, transformer_width=32, transformer_heads=1, transformer_layers=1)
ARCH = ["--embed_dim", "32", "--image_resolution", "32", "--vision_width", "8", "--transformer_width", "32",
        "--transformer_layers", "1", "--context_length", "48"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    paths = FineShapesPaths(images_dir=root / "images", dataset_json=root / "dataset.json", eval_json=root / "e.json",
                            eval_csv=root / "e.csv", scenes_json=root / "scenes.json")
    generate(FineShapesSpec(n_train=24, n_restval=4, n_val=8, n_test=8, n_eval=0, image_size=32), paths,
             progress=False, workers=1)
    words = sorted({w for im in json.loads(paths.dataset_json.read_text())["images"]
                    for s in im["sentences"] for w in s["tokens"]})
    (root / "talk.json").write_text(json.dumps({"ix_to_word": {str(i + 1): w for i, w in enumerate(words + ["UNK"])}}))
    return root, paths


def _common(root, paths, tmp_path):
    return ["--input_json", str(root / "talk.json"), "--input_dataset_json", str(paths.dataset_json),
            "--images_root", str(root), "--checkpoint_dir", str(tmp_path / "save"), "--num_workers", "0"]


def test_coco_config_is_the_faithful_one_and_strict(tmp_path):
    cfg = load_config(CONFIG_DIR / "clip_negative_text.yaml", schema=RetrievalConfig)
    assert (cfg.train.task, cfg.model.clip_model, cfg.data.batch_size, cfg.data.valid_batch_size) == \
        ("grammar", "ViT-B/32", 1600, 200)
    assert (cfg.optim.lr, cfg.optim.adam_eps, cfg.optim.weight_decay, cfg.optim.weight_decay_rule) == \
        (1e-4, 1e-6, 0.01, "original")
    assert (cfg.train.epochs, cfg.train.seed, cfg.optim.clip_grad_norm, cfg.optim.lr_schedule) == \
        (30, 9595, 0.0, "constant")
    assert cfg.model.use_grammar and not cfg.model.joint_out and not cfg.data.use_prompt
    assert cfg.data.input_clipscore_vis_dir == "data/cocotalk_clipscore_vis"
    bad = tmp_path / "bad.yaml"
    bad.write_text("_BASE_: " + str(CONFIG_DIR / "clip_negative_text.yaml") + "\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown config key 'learning_rate'"):
        load_config(bad, schema=RetrievalConfig)


@pytest.mark.slow
def test_pretraining_exports_a_clip_that_clip_load_reads(world, tmp_path, monkeypatch):
    root, paths = world
    monkeypatch.chdir(tmp_path)
    argv = ["--task", "pretrain", "--id", "p", "--scenes_json", str(paths.scenes_json), *_common(root, paths, tmp_path),
            *ARCH, "--batch_size", "8", "--valid_batch_size", "8", "--epochs", "2", "--lr", "1e-3",
            "--hard_negatives", "--relation_twin_prob", "0.5", "--paraphrase_weight", "0.5", "--text_warmup_steps", "2",
            "--aug_hflip", "--aug_shift", "2", "--prompt_prob", "0.5", "--lr_schedule", "cosine",
            "--max_logit_scale", "20", "--export_fp16", "--eval_resolutions", "32,64"]
    assert run.main(argv) == 0
    save = tmp_path / "save"
    ckpt = torch.load(save / "p-last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 8 and set(ckpt["hyper_parameters"]) == {"config"}  # 28 images / 8 -> 4 per epoch
    assert (save / "p-best.ckpt").is_file() and (save / "p.yml").is_file()
    exported = torch.load(save / "p.pt", weights_only=True)
    assert exported["text_projection"].dtype == torch.float16
    model, preprocess = clip.load(save / "p.pt")
    assert model.config == dict(TINY, vision_layers=(1, 1, 1, 1)) and preprocess.n_px == 32
    trained = {k[len("model.clip."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.clip.")}
    for k, v in model.state_dict().items():
        assert torch.equal(v, trained[k].to(v.dtype) if not v.is_floating_point() else trained[k].half().float()), k
    assert trained["logit_scale"].exp() <= 20 + 1e-4
    logged = (save / "logs" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/loss", "val/paraphrase_loss", "val/twin_accuracy", "val/t2i_R@1"} <= set(logged)
    report = json.loads((save / "p_eval_test.json").read_text())
    assert report["n_images"] == 8 and set(report["sensitivity"]["prompt"]) == {
        "color", "shape", "size", "relation", "background"}
    assert all(0 <= v <= 1 for v in report["sensitivity"]["no_prompt"].values())
    assert set(report["resolutions"]) == {"32", "64"} and report["resolutions"]["64"]["grid"] == 2
    assert report["retrieval"]["full"]["t2i"]["R@10"] == 100.0  # 8 images: every match is in the top 10
    assert load_grammar_clip(save / "p-last.ckpt").grammar_head is None

    monkeypatch.setenv("EVALUATE", "1")
    (save / "p_eval_test.json").unlink()
    assert run.main(argv) == 0 and (save / "p_eval_test.json").is_file()  # the last checkpoint
    assert run.main([*argv, "--init_from", str(save / "p.pt"), "--eval_resolutions", ""]) == 0  # the exported file
    again = json.loads((save / "p_eval_test.json").read_text())
    assert set(again["sensitivity"]) == {"no_prompt", "prompt"} and "resolutions" not in again


@pytest.fixture(scope="module")
def openai_clip_and_features(world, tmp_path_factory):
    """An OpenAI-layout CLIP file and its CLIP-S image embeddings, one <cocoid>.npy each (the original's format)."""
    root, paths = world
    out = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    model = clip.CLIP(**TINY).eval()
    torch.save(model.state_dict(), out / "tiny_clip.pt")
    images = json.loads(paths.dataset_json.read_text())["images"]
    _, preprocess = clip.load(out / "tiny_clip.pt")
    feats = out / "clipscore_vis"
    feats.mkdir()
    with torch.no_grad():
        for im in images:
            x = preprocess(Image.open(root / im["filepath"] / im["filename"]))[None]
            emb = torch.nn.functional.normalize(model.encode_image(x), dim=-1)[0]
            np.save(feats / f"{im['cocoid']}.npy", emb.numpy())
    return out / "tiny_clip.pt", feats


def test_grammar_finetuning_with_the_coco_config(world, openai_clip_and_features, tmp_path, monkeypatch, capsys):
    root, paths = world
    clip_file, feats = openai_clip_and_features
    monkeypatch.chdir(tmp_path)
    argv = ["--cfg", "clip_negative_text", "--id", "g", *_common(root, paths, tmp_path), "--clip_model", str(clip_file),
            "--input_clipscore_vis_dir", str(feats), "--batch_size", "8", "--valid_batch_size", "4", "--epochs", "2"]
    assert run.main(argv) == 0
    save = tmp_path / "save"
    best = torch.load(save / "g-best.ckpt", weights_only=True)
    assert any(k.startswith("model.grammar_head.") for k in best["state_dict"])
    original = torch.load(clip_file, weights_only=True)
    for k, v in best["state_dict"].items():  # the vision tower is frozen, the text side learns
        if k.startswith("model.clip.visual."):
            assert torch.equal(v, original[k[len("model.clip."):]]), k
    assert not torch.equal(best["state_dict"]["model.clip.text_projection"], original["text_projection"])
    for source in (save / "g.pt", save / "g-best.ckpt", save / "g-last.ckpt"):
        assert load_grammar_clip(source).grammar_head is not None
    exported = load_grammar_clip(save / "g.pt").state_dict()
    assert all(torch.equal(v, best["state_dict"][f"model.{k}"]) for k, v in exported.items())
    metrics = (save / "logs" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("val/loss", "val/t2i_R@1", "val/i2t_R@10", "val/grammar_accuracy", "val/grammar_f1", "val/grammar_FP"):
        assert key in metrics, key

    assert run.main([*argv, "--epochs", "1"]) == 2  # one run per id: a second one must say what it wants
    assert run.main([*argv, "--epochs", "1", "--overwrite"]) == 0  # a new run replaces the files
    assert sorted(p.name for p in save.glob("*.ckpt")) == ["g-best.ckpt", "g-last.ckpt"]
    assert torch.load(save / "g-last.ckpt", weights_only=True)["epoch"] == 0

    monkeypatch.setenv("EVALUATE", "1")
    assert run.main(argv) == 0
    assert run.main([*argv, "--init_from", str(save / "g.pt")]) == 0  # the exported grammar-CLIP file
    with pytest.raises(ValueError, match="neither a retrieval checkpoint nor a grammar-CLIP file"):
        run.main([*argv, "--init_from", str(clip_file)])
    monkeypatch.delenv("EVALUATE")
    capsys.readouterr()
    assert run.main([*argv, "--resume", str(tmp_path / "missing.ckpt")]) == 2
    assert "error: --resume: checkpoint not found" in capsys.readouterr().err


def test_fineshapes_grammar_config_embeds_images_in_process(world, openai_clip_and_features, tmp_path, monkeypatch):
    root, paths = world
    clip_file, _ = openai_clip_and_features
    monkeypatch.chdir(tmp_path)
    argv = ["--cfg", "fineshapes_grammar", "--id", "f", *_common(root, paths, tmp_path), "--clip_model", str(clip_file),
            "--batch_size", "16", "--valid_batch_size", "8", "--epochs", "1", "--use_prompt"]
    assert run.main(argv) == 0
    assert load_grammar_clip(tmp_path / "save" / "f.pt").grammar_head is not None
