"""The original's grammar CLIP (Lightning file: clip_model.* in Hugging Face naming + grammar_score_head.{0,2})
-> our grammar-CLIP file: the head gives the probabilities computed by hand from the source weights, and the
CLIP is the source CLIP."""
import runpy
from pathlib import Path

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from test_interop_clip_hf import hf_config, synthetic_hf_state

from captioning.checkpoints import load_lightning_checkpoint
from clip.grammar import load_grammar_clip
from clip.hf import hf_to_openai
from retrieval.convert import convert_grammar_checkpoint, grammar_clip_from_original

CONVERT_TOOL = str(Path(__file__).resolve().parents[1] / "tools" / "convert_checkpoint.py")
WIDTH = 128  # the synthetic text width


@pytest.fixture()
def original(tmp_path):
    g = torch.Generator().manual_seed(7)
    head0, head2 = torch.randn(WIDTH, WIDTH, generator=g) * 0.05, torch.randn(2, WIDTH, generator=g) * 0.05
    hf = synthetic_hf_state(3)
    state = {f"clip_model.{k}": v for k, v in hf.items()}
    state.update({"grammar_score_head.0.weight": head0, "grammar_score_head.2.weight": head2})
    path = tmp_path / "clip_negative_text-epoch=12.ckpt"
    callbacks = {ModelCheckpoint: {"best_model_score": torch.tensor(0.5)}}  # pickled as the Lightning class
    torch.save({"epoch": 12, "state_dict": state, "callbacks": callbacks,
                "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "weight_decay": 0.01}]}]}, path)
    return path, hf, head0, head2


def by_hand(pooled, head0, head2):
    hidden = torch.clamp(pooled @ head0.T, min=0)
    logits = hidden @ head2.T
    prob = torch.exp(logits[:, 1]) / torch.exp(logits).sum(1)
    assert ((prob > 0.05) & (prob < 0.95)).all(), "saturated probabilities would hide differences"
    return prob


def test_converted_head_matches_hand_computation(original, tmp_path):
    path, hf, head0, head2 = original
    convert_grammar_checkpoint(path, tmp_path / "grammar.pt")
    model = load_grammar_clip(tmp_path / "grammar.pt")
    assert model.grammar_head is not None
    pooled = torch.randn(5, WIDTH, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model.grammar_prob(pooled), by_hand(pooled, head0, head2), atol=1e-6, rtol=1e-6)
        assert torch.equal(model.clip.text_projection, hf["text_projection.weight"].T)
        for k, v in hf_to_openai(hf).items():
            assert torch.equal(model.clip.state_dict()[k], v), k
        tokens = torch.tensor([[98, 5, 17, 99, 0, 0], [98, 40, 41, 42, 43, 99]])
        text_pooled = model.clip.encode_text_pooled(tokens)
        torch.testing.assert_close(model.grammar_prob(text_pooled), by_hand(text_pooled, head0, head2),
                                   atol=1e-6, rtol=1e-6)


def test_end_to_end_against_transformers(original):
    transformers = pytest.importorskip("transformers")
    path, hf, head0, head2 = original
    hf_model = transformers.CLIPModel(transformers.CLIPConfig(**hf_config())).eval()
    hf_model.load_state_dict({k: v for k, v in hf.items() if not k.endswith("position_ids")}, strict=True)
    model = grammar_clip_from_original(load_lightning_checkpoint(path)["state_dict"])
    tokens = torch.tensor([[98, 5, 17, 99, 0, 0], [98, 40, 41, 42, 43, 99]])
    with torch.no_grad():
        hf_pooled = hf_model.text_model(input_ids=tokens, attention_mask=(tokens != 0).long()).pooler_output
        torch.testing.assert_close(model.grammar_prob(model.clip.encode_text_pooled(tokens)),
                                   by_hand(hf_pooled, head0, head2), atol=1e-5, rtol=1e-5)


def test_bad_grammar_checkpoints_are_errors(original):
    _, hf, head0, head2 = original
    state = {f"clip_model.{k}": v for k, v in hf.items()}
    with pytest.raises(ValueError, match="no grammar head"):
        grammar_clip_from_original(state)
    with pytest.raises(ValueError, match="unexpected keys.*lw_model"):
        grammar_clip_from_original({**state, "grammar_score_head.0.weight": head0,
                                    "grammar_score_head.2.weight": head2, "lw_model.x": torch.zeros(1)})


def test_convert_tool(original, tmp_path, capsys):
    main = runpy.run_path(CONVERT_TOOL)["main"]
    assert main(["grammar-clip", str(original[0]), str(tmp_path / "g.pt")]) == 0
    assert "grammar head included" in capsys.readouterr().out
    assert load_grammar_clip(tmp_path / "g.pt").grammar_head is not None
