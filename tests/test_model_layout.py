"""Parameter layout, custom LayerNorm, positional table and the teacher-forced forward of the captioner,
checked against the original key pattern and an independent functional re-computation."""
import math

import pytest
import torch
import torch.nn.functional as F

from captioning.models import LayerNorm, TransformerCaptioner, sinusoid_table

SIZES = dict(vocab_size=13, att_feat_size=10, d_model=16, d_ff=24, n_enc=2, n_dec=3, num_heads=4)


# The original checkpoint layout (as listed for the released captioner), written as a pattern.
ATTN = [f"linears.{i}.{p}" for i in range(4) for p in ("weight", "bias")]
FFN = ["feed_forward.w_1.weight", "feed_forward.w_1.bias", "feed_forward.w_2.weight", "feed_forward.w_2.bias"]


def norm(prefix):
    return [f"{prefix}.a_2", f"{prefix}.b_2"]


def expected_layout(vocab_size, att_feat_size, d_model, d_ff, n_enc, n_dec, **_):
    """Ordered {key: shape} of the original state dict at the given sizes."""
    d, n_out = d_model, vocab_size + 1
    shape = {"weight": (d, d), "bias": (d,)}
    keys = {"att_embed.0.weight": (d, att_feat_size), "att_embed.0.bias": (d,)}

    def layer(prefix, attns, n_sub):
        for a in attns:
            for k in ATTN:
                keys[f"{prefix}.{a}.{k}"] = shape[k.rsplit(".", 1)[1]]
        keys.update(zip([f"{prefix}.{k}" for k in FFN], [(d_ff, d), (d_ff,), (d, d_ff), (d,)]))
        for s in range(n_sub):
            keys.update({k: (d,) for k in norm(f"{prefix}.sublayer.{s}.norm")})

    for i in range(n_enc):
        layer(f"model.encoder.layers.{i}", ["self_attn"], 2)
    keys.update({k: (d,) for k in norm("model.encoder.norm")})
    for i in range(n_dec):
        layer(f"model.decoder.layers.{i}", ["self_attn", "src_attn"], 3)
    keys.update({k: (d,) for k in norm("model.decoder.norm")})
    keys["model.tgt_embed.0.lut.weight"] = (n_out, d)
    keys["model.tgt_embed.1.pe"] = (1, 5000, d)
    keys["model.generator.proj.weight"] = (n_out, d)
    keys["model.generator.proj.bias"] = (n_out,)
    return keys


def test_original_layout_loads_strictly():
    layout = expected_layout(**SIZES)
    model = TransformerCaptioner(**SIZES)
    sd = model.state_dict()
    assert list(sd) == list(layout)
    assert {k: tuple(v.shape) for k, v in sd.items()} == layout
    g = torch.Generator().manual_seed(1)
    original = {k: torch.randn(shape, generator=g) for k, shape in layout.items()}
    model.load_state_dict(original, strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, original[k]), k


def test_faithful_defaults_match_the_released_sizes():
    # 262 tensors and 54.9M parameters at V = 9487 (the released COCO captioner), built on the meta device.
    with torch.device("meta"):
        model = TransformerCaptioner(vocab_size=9487)
    layout = expected_layout(vocab_size=9487, att_feat_size=2048, d_model=512, d_ff=2048, n_enc=6, n_dec=6)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == layout
    assert len(layout) == 262
    assert model.att_embed[2].p == 0.5
    assert model.model.encoder.layers[0].sublayer[0].dropout.p == 0.1
    assert model.max_length == 20


def test_the_factory_reads_the_original_option_names():
    from captioning.config import config_from_dict
    from captioning.models.configured import build_captioner

    cfg = config_from_dict({"att_feat_size": 6, "d_model": 8, "d_ff": 16, "N_enc": 1, "N_dec": 2, "num_att_heads": 2,
                            "drop_prob_lm": 0.3, "max_length": 9})
    model = build_captioner(cfg, 7)
    assert len(model.model.encoder.layers) == 1 and len(model.model.decoder.layers) == 2
    assert model.model.decoder.layers[0].self_attn.h == 2 and model.att_embed[2].p == 0.3
    assert model.vocab_size == 7 and model.max_length == 9


def test_xavier_init_inside_encoder_decoder_only():
    torch.manual_seed(0)
    model = TransformerCaptioner(vocab_size=200, att_feat_size=300, d_model=64, d_ff=128, n_enc=1, n_dec=1, num_heads=4)
    for name, p in model.model.named_parameters():
        if p.dim() > 1:
            fan_out, fan_in = p.shape
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            assert p.abs().max() <= bound, name
            assert p.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1), name  # uniform(-b, b)
    # att_embed keeps the PyTorch default Linear init: uniform(+-1/sqrt(fan_in))
    w = model.att_embed[0].weight
    assert w.abs().max() <= 1 / math.sqrt(300)
    assert w.std().item() == pytest.approx(1 / math.sqrt(300) / math.sqrt(3), rel=0.1)


def test_custom_layernorm_matches_hand_formula():
    torch.manual_seed(0)
    ln = LayerNorm(7)
    with torch.no_grad():
        ln.a_2.copy_(torch.randn(7))
        ln.b_2.copy_(torch.randn(7))
    x = torch.randn(3, 5, 7) * 3 + 1
    std = torch.std(x, dim=-1, keepdim=True, unbiased=True)
    expected = ln.a_2 * (x - x.mean(-1, keepdim=True)) / (std + 1e-6) + ln.b_2
    torch.testing.assert_close(ln(x), expected)
    # and it is *not* torch's LayerNorm (biased variance): the difference is visible on 7 features
    assert not torch.allclose(ln(x), F.layer_norm(x, (7,), ln.a_2, ln.b_2, eps=1e-6), atol=1e-3)


def test_sinusoid_table_matches_formula():
    d = 6
    pe = sinusoid_table(50, d)
    for pos in (0, 1, 7, 49):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)
    model = TransformerCaptioner(**SIZES)
    assert torch.equal(model.state_dict()["model.tgt_embed.1.pe"][0], sinusoid_table(5000, SIZES["d_model"]))


def reference_logprobs(sd, att_feats, att_masks, seq, h, n_enc, n_dec):
    """Independent functional forward of the original model from a state dict (eval mode)."""
    def lin(x, p):
        return x @ sd[p + ".weight"].T + sd[p + ".bias"]

    def ln(x, p):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).sum(-1, keepdim=True) / (x.size(-1) - 1)
        return sd[p + ".a_2"] * (x - mean) / (var.sqrt() + 1e-6) + sd[p + ".b_2"]

    def mha(xq, xkv, allowed, p):  # allowed: (B, Tq, Tk) bool
        b, tq, d = xq.shape
        heads = lambda x: x.view(b, -1, h, d // h).transpose(1, 2)  # noqa: E731
        q, k, v = heads(lin(xq, p + ".linears.0")), heads(lin(xkv, p + ".linears.1")), heads(lin(xkv, p + ".linears.2"))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // h)
        scores = scores.masked_fill(~allowed.unsqueeze(1), float("-inf"))
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, tq, d)
        return lin(out, p + ".linears.3")

    def ffn(x, p):
        return lin(torch.relu(lin(x, p + ".w_1")), p + ".w_2")

    s = seq.size(0) // att_feats.size(0)
    valid = att_masks.bool()
    x = torch.relu(lin(att_feats, "att_embed.0")) * valid.unsqueeze(-1)
    x, valid = x.repeat_interleave(s, 0), valid.repeat_interleave(s, 0)
    src = valid.unsqueeze(1).expand(-1, x.size(1), -1)
    for i in range(n_enc):
        p = f"model.encoder.layers.{i}"
        y = ln(x, p + ".sublayer.0.norm")
        x = x + mha(y, y, src, p + ".self_attn")
        x = x + ffn(ln(x, p + ".sublayer.1.norm"), p + ".feed_forward")
    memory = ln(x, "model.encoder.norm")
    t, d = seq.size(1), memory.size(-1)
    pos = torch.arange(t, dtype=torch.float64).unsqueeze(1)
    dims = torch.arange(d)
    angle = pos / torch.pow(10000.0, (dims - dims % 2).double() / d)
    pe = torch.where(dims % 2 == 0, torch.sin(angle), torch.cos(angle)).float()
    y = sd["model.tgt_embed.0.lut.weight"][seq] * math.sqrt(d) + pe
    keys = (seq != 0) | (torch.arange(t) == 0)
    tgt = keys.unsqueeze(1) & torch.ones(t, t, dtype=torch.bool).tril()
    src = valid.unsqueeze(1).expand(-1, t, -1)
    for i in range(n_dec):
        p = f"model.decoder.layers.{i}"
        z = ln(y, p + ".sublayer.0.norm")
        y = y + mha(z, z, tgt, p + ".self_attn")
        y = y + mha(ln(y, p + ".sublayer.1.norm"), memory, src, p + ".src_attn")
        y = y + ffn(ln(y, p + ".sublayer.2.norm"), p + ".feed_forward")
    return lin(ln(y, "model.decoder.norm"), "model.generator.proj").log_softmax(-1)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(3)
    att = torch.randn(2, 6, SIZES["att_feat_size"], generator=g)
    masks = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]])  # longest row 5 < 6: trimmed
    seq = torch.tensor([[0, 3, 4, 5, 0, 0, 0],
                        [0, 7, 7, 2, 9, 13, 0],
                        [0, 1, 0, 0, 0, 0, 0],
                        [0, 12, 11, 10, 9, 8, 7]])  # rows i*S + j, S = 2
    return att, masks, seq


def test_teacher_forced_forward_matches_independent_reference(batch):
    att, masks, seq = batch
    torch.manual_seed(0)
    model = TransformerCaptioner(**SIZES).eval()
    with torch.no_grad():
        for p in model.parameters():  # LayerNorm gains/biases away from 1/0 so they matter
            if p.dim() == 1:
                p.add_(0.3 * torch.randn_like(p))
        out = model(att, masks, seq)
        ref = reference_logprobs(model.state_dict(), att, masks, seq,
                                 SIZES["num_heads"], SIZES["n_enc"], SIZES["n_dec"])
    assert out.shape == (4, 7, SIZES["vocab_size"] + 1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # (B, S, T) input and encode-once give the same values in eval mode
    torch.testing.assert_close(model(att, masks, seq.view(2, 2, 7)), out)
    torch.testing.assert_close(model(att, masks, seq, encode_once=True), out, atol=1e-5, rtol=1e-5)


def test_visual_tokens_repeated_before_encoder_unless_encode_once(batch):
    att, masks, seq = batch
    model = TransformerCaptioner(**SIZES).train()
    seen = []
    model.model.encoder.register_forward_hook(lambda mod, inp, out: seen.append((inp[0].clone(), out.clone())))
    model(att, masks, seq)
    x, out = seen.pop()
    assert x.shape[0] == 4  # rows i*S + j
    torch.testing.assert_close(x[0], x[1])  # same embedded tokens for the two captions of image 0 ...
    assert not torch.allclose(out[0], out[1])  # ... but independent encoder dropout
    assert not torch.allclose(x[0], x[2])
    model(att, masks, seq, encode_once=True)
    x, out = seen.pop()
    assert x.shape[0] == 2


def test_bad_inputs_raise():
    model = TransformerCaptioner(**SIZES)
    att = torch.randn(2, 4, SIZES["att_feat_size"])
    seq = torch.zeros(3, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="multiple of the batch size"):
        model(att, None, seq)
    with pytest.raises(ValueError, match="prefix"):
        model(att, torch.tensor([[1, 0, 1, 0], [1, 1, 1, 1]]), torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="prefix"):
        model(att, torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]]), torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        TransformerCaptioner(vocab_size=5, d_model=10, num_heads=4)
