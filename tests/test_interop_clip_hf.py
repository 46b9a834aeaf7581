"""Hugging Face CLIPModel weights -> our CLIP: every key used, none missing, each tensor where the documented
table puts it; clip.load reads HF folders; configs our CLIP cannot reproduce are refused; and, with
`transformers` installed, outputs equal a tiny random transformers.CLIPModel's."""
import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

import clip
from clip.hf import hf_to_openai, read_hf_folder

TEXT = dict(width=128, layers=2, heads=2, vocab=100, context=16)
VISION = dict(width=128, layers=2, heads=2, patch=16, image=32)
EMBED = 32


def hf_config(**text_overrides):
    return {"model_type": "clip", "projection_dim": EMBED,
            "text_config": {"hidden_size": TEXT["width"], "intermediate_size": 4 * TEXT["width"],
                            "num_hidden_layers": TEXT["layers"], "num_attention_heads": TEXT["heads"],
                            "vocab_size": TEXT["vocab"], "max_position_embeddings": TEXT["context"],
                            "bos_token_id": TEXT["vocab"] - 2, "eos_token_id": TEXT["vocab"] - 1, "pad_token_id": 0,
                            "hidden_act": "quick_gelu", **text_overrides},
            "vision_config": {"hidden_size": VISION["width"], "intermediate_size": 4 * VISION["width"],
                              "num_hidden_layers": VISION["layers"], "num_attention_heads": VISION["heads"],
                              "image_size": VISION["image"], "patch_size": VISION["patch"], "hidden_act": "quick_gelu"}}


def hf_layer_shapes(prefix, w):
    shapes = {}
    for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
        shapes[f"{prefix}.self_attn.{p}.weight"] = (w, w)
        shapes[f"{prefix}.self_attn.{p}.bias"] = (w,)
    for n in ("layer_norm1", "layer_norm2"):
        shapes[f"{prefix}.{n}.weight"] = shapes[f"{prefix}.{n}.bias"] = (w,)
    shapes.update({f"{prefix}.mlp.fc1.weight": (4 * w, w), f"{prefix}.mlp.fc1.bias": (4 * w,),
                   f"{prefix}.mlp.fc2.weight": (w, 4 * w), f"{prefix}.mlp.fc2.bias": (w,)})
    return shapes


def synthetic_hf_state(seed=0, position_ids=True):
    """Random tensors under Hugging Face CLIPModel's key names (written out from its documented layout)."""
    t, v = TEXT["width"], VISION["width"]
    n_pos = (VISION["image"] // VISION["patch"]) ** 2 + 1
    shapes = {"logit_scale": (), "text_model.embeddings.token_embedding.weight": (TEXT["vocab"], t),
              "text_model.embeddings.position_embedding.weight": (TEXT["context"], t),
              "text_model.final_layer_norm.weight": (t,), "text_model.final_layer_norm.bias": (t,),
              "vision_model.embeddings.class_embedding": (v,),
              "vision_model.embeddings.patch_embedding.weight": (v, 3, VISION["patch"], VISION["patch"]),
              "vision_model.embeddings.position_embedding.weight": (n_pos, v),
              "vision_model.pre_layrnorm.weight": (v,), "vision_model.pre_layrnorm.bias": (v,),
              "vision_model.post_layernorm.weight": (v,), "vision_model.post_layernorm.bias": (v,),
              "visual_projection.weight": (EMBED, v), "text_projection.weight": (EMBED, t)}
    for i in range(TEXT["layers"]):
        shapes.update(hf_layer_shapes(f"text_model.encoder.layers.{i}", t))
    for i in range(VISION["layers"]):
        shapes.update(hf_layer_shapes(f"vision_model.encoder.layers.{i}", v))
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    if position_ids:
        state["text_model.embeddings.position_ids"] = torch.arange(TEXT["context"])[None]
        state["vision_model.embeddings.position_ids"] = torch.arange(n_pos)[None]
    return state


def expected_placement(hf):
    """OpenAI-layout key -> tensor, written out independently of clip.hf's tables."""
    out = {"logit_scale": hf["logit_scale"],
           "token_embedding.weight": hf["text_model.embeddings.token_embedding.weight"],
           "positional_embedding": hf["text_model.embeddings.position_embedding.weight"],
           "ln_final.weight": hf["text_model.final_layer_norm.weight"],
           "ln_final.bias": hf["text_model.final_layer_norm.bias"],
           "text_projection": hf["text_projection.weight"].T,
           "visual.class_embedding": hf["vision_model.embeddings.class_embedding"],
           "visual.conv1.weight": hf["vision_model.embeddings.patch_embedding.weight"],
           "visual.positional_embedding": hf["vision_model.embeddings.position_embedding.weight"],
           "visual.ln_pre.weight": hf["vision_model.pre_layrnorm.weight"],
           "visual.ln_pre.bias": hf["vision_model.pre_layrnorm.bias"],
           "visual.ln_post.weight": hf["vision_model.post_layernorm.weight"],
           "visual.ln_post.bias": hf["vision_model.post_layernorm.bias"],
           "visual.proj": hf["visual_projection.weight"].T}
    for src, dst, n in (("text_model", "transformer", TEXT["layers"]),
                        ("vision_model", "visual.transformer", VISION["layers"])):
        for i in range(n):
            a, b = f"{src}.encoder.layers.{i}", f"{dst}.resblocks.{i}"
            for p in ("weight", "bias"):
                out[f"{b}.attn.in_proj_{p}"] = torch.cat([hf[f"{a}.self_attn.{x}_proj.{p}"] for x in "qkv"])
                out[f"{b}.attn.out_proj.{p}"] = hf[f"{a}.self_attn.out_proj.{p}"]
                out[f"{b}.ln_1.{p}"] = hf[f"{a}.layer_norm1.{p}"]
                out[f"{b}.ln_2.{p}"] = hf[f"{a}.layer_norm2.{p}"]
                out[f"{b}.mlp.c_fc.{p}"] = hf[f"{a}.mlp.fc1.{p}"]
                out[f"{b}.mlp.c_proj.{p}"] = hf[f"{a}.mlp.fc2.{p}"]
    return out


def our_clip_keys():
    model = clip.CLIP(embed_dim=EMBED, image_resolution=VISION["image"], vision_layers=VISION["layers"],
                      vision_width=VISION["width"], vision_patch_size=VISION["patch"], context_length=TEXT["context"],
                      vocab_size=TEXT["vocab"], transformer_width=TEXT["width"], transformer_heads=TEXT["heads"],
                      transformer_layers=TEXT["layers"])
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_every_key_used_and_none_missing():
    hf = synthetic_hf_state()
    mapped = hf_to_openai(hf)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == our_clip_keys()
    expected = expected_placement(hf)
    assert set(expected) == set(mapped)
    for k, v in expected.items():
        assert torch.equal(mapped[k], v), k
    model = clip.build_model(mapped)
    assert model.visual.input_resolution == VISION["image"] and model.context_length == TEXT["context"]


def test_unknown_or_incomplete_keys_are_errors():
    hf = synthetic_hf_state()
    with pytest.raises(KeyError, match="unknown keys.*text_model.pooler"):
        hf_to_openai({**hf, "text_model.pooler.weight": torch.zeros(1)})
    del hf["vision_model.encoder.layers.1.self_attn.v_proj.bias"]
    with pytest.raises(KeyError, match="layers.1.self_attn: missing the v projection"):
        hf_to_openai(hf)
    with pytest.raises(KeyError, match="only two-tower"):
        hf_to_openai({k: v for k, v in synthetic_hf_state().items() if not k.startswith(("vision", "visual"))})


def write_folder(path, state, config, safetensors=False):
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    if safetensors:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"))
    else:
        torch.save(state, path / "pytorch_model.bin")
    return path


def test_clip_load_reads_a_hf_folder(tmp_path):
    hf = synthetic_hf_state(1)
    model, preprocess = clip.load(write_folder(tmp_path / "hf", hf, hf_config()))
    expected = expected_placement(hf)
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected[k]), k
    assert preprocess.n_px == VISION["image"]


def test_safetensors_folder(tmp_path):
    pytest.importorskip("safetensors")
    hf = synthetic_hf_state(2, position_ids=False)
    folder = write_folder(tmp_path / "hf", hf, hf_config(), safetensors=True)
    mapped = read_hf_folder(folder)
    for k, v in expected_placement(hf).items():
        assert torch.equal(mapped[k], v), k


def test_safetensors_missing_is_a_clear_error(tmp_path, monkeypatch):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(hf_config()))
    (folder / "model.safetensors").write_bytes(b"\0" * 16)
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(ImportError, match="install the `safetensors` package"):
        clip.load(folder)


def test_configs_we_cannot_reproduce_are_refused(tmp_path):
    hf = synthetic_hf_state()
    with pytest.raises(ValueError, match="hidden_act 'gelu'"):
        clip.load(write_folder(tmp_path / "a", hf, hf_config(hidden_act="gelu")))
    with pytest.raises(ValueError, match="num_attention_heads 4"):
        clip.load(write_folder(tmp_path / "b", hf, hf_config(num_attention_heads=4)))
    (tmp_path / "c").mkdir()
    torch.save(hf, tmp_path / "c" / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        clip.load(tmp_path / "c")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "config.json").write_text(json.dumps(hf_config()))
    with pytest.raises(FileNotFoundError, match="no PyTorch weights"):
        clip.load(tmp_path / "d")


def test_outputs_equal_transformers_clip():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = hf_config()
    hf_model = transformers.CLIPModel(transformers.CLIPConfig(**cfg)).eval()
    with torch.no_grad():  # random non-trivial norms and biases (HF initialises them to 1 / 0)
        for name, p in hf_model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.2 * torch.randn_like(p))
    ours = clip.build_model(hf_to_openai(hf_model.state_dict()))
    g = torch.Generator().manual_seed(1)
    ids = torch.zeros(3, TEXT["context"], dtype=torch.long)
    for row, n in enumerate((4, 9, TEXT["context"] - 2)):
        ids[row, 0] = TEXT["vocab"] - 2  # a start token
        ids[row, 1:n] = torch.randint(1, TEXT["vocab"] - 2, (n - 1,), generator=g)
        ids[row, n] = TEXT["vocab"] - 1  # EOT, the largest id
    pixels = torch.randn(2, 3, VISION["image"], VISION["image"], generator=g)
    with torch.no_grad():
        out = hf_model(input_ids=ids, attention_mask=(ids != 0).long(), pixel_values=pixels)
        hf_pooled = hf_model.text_model(input_ids=ids, attention_mask=(ids != 0).long()).pooler_output
        pooled = ours.encode_text_pooled(ids)
        text = torch.nn.functional.normalize(ours.encode_text(ids), dim=-1)
        image = torch.nn.functional.normalize(ours.encode_image(pixels), dim=-1)
        logits_per_image, _ = ours(pixels, ids)
    torch.testing.assert_close(pooled, hf_pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(text, out.text_embeds, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(image, out.image_embeds, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits_per_image, out.logits_per_image, atol=1e-4, rtol=1e-5)


def test_convert_tool_hf_clip(tmp_path, capsys):
    main = runpy.run_path(str(Path(__file__).resolve().parents[1] / "tools" / "convert_checkpoint.py"))["main"]
    hf = synthetic_hf_state(4)
    folder = write_folder(tmp_path / "hf", hf, hf_config())
    assert main(["hf-clip", str(folder), str(tmp_path / "clip.pt")]) == 0
    assert "2-layer ViT/16 at 32 px" in capsys.readouterr().out
    model, _ = clip.load(tmp_path / "clip.pt")
    for k, v in expected_placement(hf).items():
        assert torch.equal(model.state_dict()[k], v), k
    assert main(["hf-clip", str(tmp_path / "nowhere"), str(tmp_path / "x.pt")]) == 2
