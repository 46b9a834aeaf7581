"""The speed options against the paths they replace: encode-once MLE against the repeated encoder,
SCST re-scoring against the log-probs gathered while sampling, and gradient accumulation."""
from pathlib import Path

import numpy as np
import pytest
import torch

from captioning.config import Config, ConfigError, load_config
from captioning.data.prepro import write_df
from captioning.models import TransformerCaptioner, sample, sequence_logprobs
from captioning.training.module import CaptionerModule
from captioning.training.run import build_trainer
from cider import document_frequency

SIZES = dict(vocab_size=40, att_feat_size=12, d_model=32, d_ff=48, n_enc=2, n_dec=2, num_heads=4)


def random_model(seed: int = 0) -> TransformerCaptioner:
    torch.manual_seed(seed)
    model = TransformerCaptioner(**SIZES)
    with torch.no_grad():
        for p in model.parameters():  # LayerNorm gains/biases away from 1/0 so they matter
            if p.dim() == 1:
                p.add_(0.3 * torch.randn_like(p))
        model.model.generator.proj.bias[0] = 2.0  # some captions end early, others run to the end
    return model


def inputs(b: int = 3, n: int = 6, s: int = 5, t: int = 9):
    g = torch.Generator().manual_seed(1)
    att = torch.randn(b, n, SIZES["att_feat_size"], generator=g)
    masks = torch.ones(b, n)
    masks[1, n // 2:] = 0
    seq = torch.randint(1, SIZES["vocab_size"] + 1, (b * s, t), generator=g)
    seq[:, 0] = 0
    seq[2, 4:] = 0
    return att, masks, seq


@pytest.mark.parametrize("with_masks", [False, True])
def test_encode_once_equals_repeated_encoder_exactly_in_eval_mode(with_masks):
    model = random_model().eval()
    att, masks, seq = inputs()
    masks = masks if with_masks else None
    with torch.no_grad():
        repeated = model(att, masks, seq)
        once = model(att, masks, seq, encode_once=True)
    assert torch.equal(once, repeated)


def test_encode_once_shares_the_encoder_dropout_in_train_mode():
    model = random_model().train()
    att, masks, seq = inputs(s=2)
    memories = []
    model.model.encoder.register_forward_hook(lambda mod, inp, out: memories.append(out))
    torch.manual_seed(3)
    model(att, masks, seq, encode_once=True)
    assert memories.pop().shape[0] == 3  # one encoder row per image
    model(att, masks, seq)
    repeated = memories.pop()
    assert repeated.shape[0] == 6 and not torch.allclose(repeated[0], repeated[1])


def module_for(tmp_path: Path, **keys) -> CaptionerModule:
    vocab = {str(i): f"w{i}" for i in range(1, SIZES["vocab_size"] + 1)}
    refs = [["1 2 3 0", "4 5 6 0"], ["7 8 9 0", "1 5 9 0"], ["2 4 6 0", "3 6 9 0"]]
    df, ref_len = document_frequency(refs)
    write_df(tmp_path / "df-idxs.p", df, ref_len)
    cfg = Config()
    for key, value in dict(att_feat_size=SIZES["att_feat_size"], d_model=32, d_ff=48, N_enc=2, N_dec=2,
                           num_att_heads=4, max_length=8, self_critical_after=0, noamopt=False,
                           cached_tokens=str(tmp_path / "df-idxs.p"), **keys).items():
        cfg.set(key, value)
    module = CaptionerModule(cfg.to_flat_dict(), vocab)
    module.model.load_state_dict(random_model().state_dict())
    module.log = lambda *args, **kwargs: None
    return module


def test_mle_loss_follows_the_encode_once_key(tmp_path):
    att, masks, seq = inputs(s=5, t=9)
    batch = {"att_feats": att, "att_masks": masks, "labels": seq.view(3, 5, 9), "masks": (seq > 0).float().view(3, 5, 9)}
    batch["masks"][..., :2] = 1
    faithful, once = module_for(tmp_path), module_for(tmp_path, mle_encode_once=True)
    rows = []
    for module in (faithful, once):
        module.model.model.encoder.register_forward_hook(lambda mod, inp, out: rows.append(out.shape[0]))
        module.eval()
        with torch.no_grad():
            loss = module.mle_loss(batch)
        module.train()
        module.mle_loss(batch)
        rows.append(loss)
    assert rows[0] == rows[1] == 15 and rows[3] == rows[4] == 3
    assert torch.equal(rows[2], rows[5])  # eval mode: the same loss


def test_sequence_logprobs_equal_the_sampled_ones_in_eval_mode():
    model = random_model().eval()
    att, masks, _ = inputs()
    out = sample(model, att, masks, method="sample", sample_n=4, max_length=10,
                 generator=torch.Generator().manual_seed(0))
    assert (out.seq == 0).any(1).any() and (out.seq[:, 1] > 0).any()  # some rows end early, some do not
    rescored = sequence_logprobs(model, att, masks, out.seq)
    torch.testing.assert_close(rescored, out.logprobs, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(rescored.sum(), model.att_embed[0].weight)
    torch.testing.assert_close(grads[0], torch.autograd.grad(out.logprobs.sum(), model.att_embed[0].weight)[0],
                               atol=1e-4, rtol=1e-4)


def test_scst_rescore_gives_the_faithful_loss_and_gradient_in_eval_mode(tmp_path):
    att, masks, _ = inputs(b=3)
    gts = [np.array([[1, 2, 3], [4, 5, 6]]), np.array([[7, 8, 9], [1, 5, 9]]), np.array([[2, 4, 6], [3, 6, 9]])]
    results = []
    for rescore in (False, True):
        module = module_for(tmp_path, scst_rescore=rescore)
        module.setup("fit")
        module.eval()  # same numbers as long as no dropout is drawn
        torch.manual_seed(5)
        loss = module.scst_loss({"att_feats": att, "att_masks": masks, "gts": gts})
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in module.model.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert loss_a != 0
    torch.testing.assert_close(loss_b, loss_a, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def test_accumulate_grad_batches_reaches_the_trainer_and_is_range_checked(tmp_path):
    cfg = load_config(overrides={"id": "acc", "accumulate_grad_batches": 4})
    trainer = build_trainer(cfg, tmp_path, "val/CIDEr", "max")
    assert trainer.accumulate_grad_batches == 4
    with pytest.raises(ConfigError, match="'accumulate_grad_batches' must be >= 1"):
        load_config(overrides={"id": "acc", "accumulate_grad_batches": 0})   # refused when the config is resolved


def test_fineshapes_configs_encode_once_and_coco_configs_stay_faithful():
    root = Path(__file__).resolve().parents[1] / "configs"
    for path in sorted(root.glob("**/*.yml")):
        expected = path.name.startswith("fineshapes")
        assert load_config(path).model.mle_encode_once is expected, path.name


def test_grouped_cross_attention_equals_attention_to_copied_keys():
    from captioning.models.layers import MultiHeadedAttention

    torch.manual_seed(0)
    attn = MultiHeadedAttention(4, 32).eval()
    memory, query = torch.randn(3, 7, 32), torch.randn(12, 1, 32)  # 3 images x 4 rows
    mask = torch.ones(3, 1, 7, dtype=torch.bool)
    mask[1, :, 4:] = False
    k, v = attn.project_kv(memory, memory)
    grouped = attn.attend(query, k, v, mask, group=4)
    copied = attn.attend(query, k.repeat_interleave(4, 0), v.repeat_interleave(4, 0), mask.repeat_interleave(4, 0))
    torch.testing.assert_close(grouped, copied)
    with pytest.raises(ValueError, match="grouped attention"):
        attn.attend(query[:8], k, v, mask, group=4)


def test_attention_with_dropout_is_the_fused_attention_when_nothing_is_dropped():
    from captioning.models.layers import attention

    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 9, 8), torch.randn(2, 4, 9, 8)
    mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    mask[0, ..., 6:] = False
    fused = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(attention(q, k, v, mask, dropout_p=1e-12), fused)  # the written-out formula
    dropped = attention(q, k, v, mask, dropout_p=0.5)
    assert not torch.allclose(dropped, fused)


@pytest.mark.parametrize("training", [False, True])
def test_grouped_sampling_matches_the_uncached_reference(training):
    model = random_model().train(training)
    att, masks, _ = inputs()
    if training:  # dropout off inside the model's modules, train-mode code paths on
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        for layer in [*model.model.encoder.layers, *model.model.decoder.layers]:
            for a in (getattr(layer, "self_attn", None), getattr(layer, "src_attn", None)):
                if a is not None:
                    a.dropout_p = 1e-12
    runs = [sample(model, att, masks, method="sample", sample_n=3, max_length=8, use_cache=cache,
                   generator=torch.Generator().manual_seed(0)) for cache in (True, False)]
    assert torch.equal(runs[0].seq, runs[1].seq)
    torch.testing.assert_close(runs[0].logprobs, runs[1].logprobs, atol=1e-5, rtol=1e-5)
