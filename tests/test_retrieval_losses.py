"""The contrastive loss and the grammar statistics against hand-worked examples."""
import math

import pytest
import torch

from retrieval.losses import clip_loss, grammar_counts, grammar_scores
from retrieval.module import parameter_groups


def _softplus(x):
    return math.log1p(math.exp(x))


def test_clip_loss_2x2_by_hand():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[3.0, 0.0], [0.6, 0.8]])  # normalised inside: [1, 0] and [0.6, 0.8]
    # scaled cosines (scale 2): image rows [2, 1.2] and [0, 1.6]; text rows [2, 0] and [1.2, 1.6]
    # two-way cross-entropy with the match at logit a and the other at b is softplus(b - a)
    image_side = (_softplus(1.2 - 2.0) + _softplus(0.0 - 1.6)) / 2
    text_side = (_softplus(0.0 - 2.0) + _softplus(1.2 - 1.6)) / 2
    expected = (image_side + text_side) / 2
    assert clip_loss(image, text, 2.0).item() == pytest.approx(expected, rel=1e-6)


def test_extra_negative_texts_only_enter_the_image_side():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    neg = torch.tensor([[0.8, 0.6]])
    # image 0 scores [2, 1.2 | 1.6], image 1 scores [0, 1.6 | 1.2]; the text side is unchanged
    row0 = -2.0 + math.log(math.exp(2.0) + math.exp(1.2) + math.exp(1.6))
    row1 = -1.6 + math.log(math.exp(0.0) + math.exp(1.6) + math.exp(1.2))
    text_side = (_softplus(0.0 - 2.0) + _softplus(1.2 - 1.6)) / 2
    expected = ((row0 + row1) / 2 + text_side) / 2
    assert clip_loss(image, text, 2.0, neg).item() == pytest.approx(expected, rel=1e-6)


def test_clip_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        clip_loss(torch.zeros(2, 3), torch.zeros(3, 3), 1.0)


def test_grammar_counts_use_the_usual_definitions():
    pred = torch.tensor([1, 1, 0, 0, 1, 0])
    label = torch.tensor([1, 0, 1, 0, 1, 0])
    assert grammar_counts(pred, label) == {"TP": 2, "FP": 1, "FN": 1, "TN": 2}
    scores = grammar_scores({"TP": 6, "FP": 2, "FN": 3, "TN": 9})
    assert scores["accuracy"] == pytest.approx(100 * 15 / 20)
    assert scores["precision"] == pytest.approx(100 * 6 / 8)
    assert scores["recall"] == pytest.approx(100 * 6 / 9)
    assert scores["f1"] == pytest.approx(100 * 2 * 6 / (2 * 6 + 2 + 3))  # F1 = 2TP / (2TP + FP + FN)
    assert grammar_scores({"TP": 0, "FP": 0, "FN": 0, "TN": 0})["f1"] == 0.0


def test_weight_decay_rules():
    named = [(n, torch.nn.Parameter(torch.zeros(s))) for n, s in [
        ("transformer.resblocks.0.ln_1.weight", (4,)), ("transformer.resblocks.0.ln_1.bias", (4,)),
        ("transformer.resblocks.0.attn.in_proj_weight", (12, 4)), ("token_embedding.weight", (9, 4)),
        ("logit_scale", ()), ("text_projection", (4, 4))]]
    names = {id(p): n for n, p in named}

    def decayed(rule):
        groups = parameter_groups(named, 0.01, rule)
        return {names[id(p)] for p in groups[0]["params"]}

    # the original's rule ("bias" / "LayerNorm.weight" substrings) decays norm weights, embeddings and the scale
    assert decayed("original") == {n for n, _ in named} - {"transformer.resblocks.0.ln_1.bias"}
    assert decayed("standard") == {"transformer.resblocks.0.attn.in_proj_weight", "text_projection"}
