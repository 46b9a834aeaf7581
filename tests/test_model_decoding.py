"""Decoding: cached vs uncached, greedy/sampling/beam equivalences, constraints, and agreement with
the teacher-forced forward and an independent beam-search reference."""
import math

import pytest
import torch

from captioning.models import TransformerCaptioner, beam_search, length_penalty_fn, sample, sampling_logits
from captioning.models.decoding import TRIGRAM_PENALTY

V, C = 9, 6


def tiny_model(seed=0, max_length=8):
    torch.manual_seed(seed)
    model = TransformerCaptioner(vocab_size=V, att_feat_size=C, d_model=16, d_ff=32, n_enc=2, n_dec=2,
                                 num_heads=2, max_length=max_length).eval()
    with torch.no_grad():  # a flatter output so that samples vary in length and content
        model.model.generator.proj.weight.mul_(0.5)
    return model


def constant_model(bias, max_length=12):
    """Output log-probs log_softmax(bias) whatever the input."""
    model = tiny_model(max_length=max_length)
    with torch.no_grad():
        model.model.generator.proj.weight.zero_()
        model.model.generator.proj.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return model


@pytest.fixture
def feats():
    g = torch.Generator().manual_seed(5)
    att = torch.randn(3, 5, C, generator=g)
    masks = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]])
    return att, masks


def teacher_forced_token_logprobs(model, att, masks, seq):
    """Log-probs of ``seq``'s tokens from the teacher-forced forward; 0 after the first EOS."""
    inp = torch.cat([torch.zeros_like(seq[:, :1]), seq[:, :-1]], 1)
    lp = model(att, masks, inp).gather(2, seq.unsqueeze(2))[..., 0]
    done_before = torch.cat([torch.zeros_like(seq[:, :1]), (seq[:, :-1] == 0).long().cumsum(1)], 1) > 0
    return lp.masked_fill(done_before, 0.0)


def assert_ends_cleanly(seq, max_length):
    assert seq.shape[1] == max_length
    for row in seq.tolist():
        if 0 in row:
            assert all(tok == 0 for tok in row[row.index(0):]), row


@pytest.mark.parametrize("kwargs", [
    dict(method="greedy"),
    dict(method="greedy", decoding_constraint=True, bad_ending_ids=[2, 3], block_trigrams=True, unk_idx=V),
    dict(method="sample", sample_n=3),
    dict(method="sample", sample_n=2, temperature=0.7, top_k=3),
    dict(method="sample", sample_n=2, top_p=0.8, block_trigrams=True),
])
def test_cached_equals_uncached_sampling(feats, kwargs):
    att, masks = feats
    model = tiny_model()
    outs = []
    for use_cache in (True, False):
        gen = torch.Generator().manual_seed(11)
        outs.append(sample(model, att, masks, use_cache=use_cache, generator=gen, return_full_logprobs=True, **kwargs))
    cached, uncached = outs
    assert torch.equal(cached.seq, uncached.seq)
    torch.testing.assert_close(cached.logprobs, uncached.logprobs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cached.full_logprobs, uncached.full_logprobs, atol=1e-5, rtol=1e-5)
    assert_ends_cleanly(cached.seq, model.max_length)


@pytest.mark.parametrize("kwargs", [dict(beam_size=3), dict(beam_size=4, sample_n=4, length_penalty="wu_0.7"),
                                    dict(beam_size=2, decoding_constraint=True, unk_idx=V, block_trigrams=True)])
def test_cached_equals_uncached_beam(feats, kwargs):
    att, masks = feats
    model = tiny_model()
    cached = beam_search(model, att, masks, use_cache=True, return_full_logprobs=True, **kwargs)
    uncached = beam_search(model, att, masks, use_cache=False, return_full_logprobs=True, **kwargs)
    assert torch.equal(cached.seq, uncached.seq)
    torch.testing.assert_close(cached.logprobs, uncached.logprobs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cached.scores, uncached.scores, atol=1e-4, rtol=1e-5)
    assert_ends_cleanly(cached.seq, model.max_length)


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("method", ["greedy", "sample"])
def test_decoded_logprobs_match_teacher_forcing(feats, use_cache, method):
    att, masks = feats
    model = tiny_model()
    out = sample(model, att, masks, method=method, sample_n=2, use_cache=use_cache,
                 generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = teacher_forced_token_logprobs(model, att.repeat_interleave(2, 0), masks.repeat_interleave(2, 0),
                                                 out.seq)
    torch.testing.assert_close(out.logprobs, expected, atol=1e-5, rtol=1e-5)
    if method == "sample":  # the check covered rows that end early and rows that hit the limit
        lengths = (out.seq > 0).sum(1)
        assert lengths.min() < model.max_length and lengths.max() == model.max_length


def test_greedy_is_argmax_of_teacher_forced_distribution(feats):
    att, masks = feats
    model = tiny_model()
    out = sample(model, att, masks)
    inp = torch.cat([torch.zeros_like(out.seq[:, :1]), out.seq[:, :-1]], 1)
    with torch.no_grad():
        best = model(att, masks, inp).argmax(-1)
    ended = torch.cat([torch.zeros_like(out.seq[:, :1]), (out.seq[:, :-1] == 0).long().cumsum(1)], 1) > 0
    assert torch.equal(out.seq, best.masked_fill(ended, 0))


def test_beam_size_one_and_top_k_one_equal_greedy(feats):
    att, masks = feats
    model = tiny_model()
    greedy = sample(model, att, masks)
    beam = beam_search(model, att, masks, beam_size=1)
    topk = sample(model, att, masks, method="sample", top_k=1, sample_n=2)
    assert torch.equal(beam.seq, greedy.seq)
    torch.testing.assert_close(beam.logprobs, greedy.logprobs)
    assert torch.equal(topk.seq, greedy.seq.repeat_interleave(2, 0))


def test_sample_n_rows_are_grouped_by_image(feats):
    att, masks = feats
    model = tiny_model()
    greedy = sample(model, att, masks, sample_n=3)
    one = sample(model, att, masks)
    assert torch.equal(greedy.seq, one.seq.repeat_interleave(3, 0))
    # sampled row 3*i + k belongs to image i: its log-probs come from image i's teacher-forced forward
    drawn = sample(model, att, masks, method="sample", sample_n=3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for i in range(3):
            rows = drawn.seq[3 * i:3 * i + 3]
            lp = teacher_forced_token_logprobs(model, att[i:i + 1].repeat(3, 1, 1), masks[i:i + 1].repeat(3, 1), rows)
            torch.testing.assert_close(drawn.logprobs[3 * i:3 * i + 3], lp, atol=1e-5, rtol=1e-5)


def test_sampled_logprobs_are_the_gather_of_full_distribution_and_carry_gradients(feats):
    att, masks = feats
    model = tiny_model().train()
    out = sample(model, att, masks, method="sample", sample_n=4, return_full_logprobs=True, block_trigrams=True,
                 generator=torch.Generator().manual_seed(4))
    assert out.full_logprobs.shape == (12, model.max_length, V + 1)
    gathered = out.full_logprobs.gather(2, out.seq.unsqueeze(2))[..., 0]
    torch.testing.assert_close(out.logprobs, gathered)
    live = out.full_logprobs.abs().sum(-1) > 0
    # without constraints the live rows are normalised distributions
    plain = sample(model, att, masks, method="sample", sample_n=4, return_full_logprobs=True)
    live_plain = plain.full_logprobs.abs().sum(-1) > 0
    torch.testing.assert_close(plain.full_logprobs[live_plain].logsumexp(-1), torch.zeros(int(live_plain.sum())),
                               atol=1e-5, rtol=0)
    assert live.any()
    (-out.logprobs.sum()).backward()
    assert model.att_embed[0].weight.grad.abs().sum() > 0
    assert model.model.decoder.layers[0].self_attn.linears[1].weight.grad.abs().sum() > 0


def test_top_p_hand_example():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = sampling_logits(probs.log(), top_p=0.7)
    torch.testing.assert_close(logits.softmax(-1), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    # the first token is kept even when it alone exceeds p
    assert torch.isfinite(sampling_logits(probs.log(), top_p=0.1)).tolist() == [[True, False, False, False]]
    topk = sampling_logits(torch.tensor([[0.1, 0.5, 0.3, 0.1]]).log(), temperature=2.0, top_k=2).softmax(-1)
    z = math.sqrt(0.5) + math.sqrt(0.3)
    torch.testing.assert_close(topk, torch.tensor([[0.0, math.sqrt(0.5) / z, math.sqrt(0.3) / z, 0.0]]))


def naive_trigram_penalty(prefix):
    """The original's dict-of-lists trigram count, written per row in plain Python."""
    trigrams, t = {}, len(prefix)
    for s in range(3, t + 1):
        trigrams.setdefault((prefix[s - 3], prefix[s - 2]), []).append(prefix[s - 1])
    counts = [0] * (V + 1)
    if t >= 3:
        for j in trigrams.get((prefix[t - 2], prefix[t - 1]), []):
            counts[j] += 1
    return counts


def test_block_trigrams_penalty_on_every_row(feats):
    att, masks = feats
    model = tiny_model()
    out = sample(model, att, masks, method="sample", sample_n=3, block_trigrams=True, return_full_logprobs=True,
                 generator=torch.Generator().manual_seed(1))
    inp = torch.cat([torch.zeros_like(out.seq[:, :1]), out.seq[:, :-1]], 1)
    with torch.no_grad():
        plain = model(att.repeat_interleave(3, 0), masks.repeat_interleave(3, 0), inp)
    for r in range(out.seq.size(0)):
        row = out.seq[r].tolist()
        for t in range(model.max_length):
            if t > 0 and row[t - 1] == 0:
                break
            expected = plain[r, t] + TRIGRAM_PENALTY * torch.tensor(naive_trigram_penalty(row[:t]), dtype=torch.float32)
            torch.testing.assert_close(out.full_logprobs[r, t], expected, atol=1e-5, rtol=1e-5)


def has_repeated_trigram(row):
    grams = [tuple(row[i:i + 3]) for i in range(len(row) - 2) if 0 not in row[i:i + 3]]
    return len(grams) != len(set(grams))


def test_block_trigrams_stops_repeats_in_all_sample_n_rows():
    # token 1 best, then 2..9 within a margin smaller than the penalty; EOS never
    model = constant_model([-50.0, 0.0] + [-0.1 * k for k in range(1, V)])
    att = torch.randn(2, 4, C)
    free = sample(model, att, sample_n=3)
    blocked = sample(model, att, sample_n=3, block_trigrams=True)
    assert all(has_repeated_trigram(r) for r in free.seq.tolist())
    assert not any(has_repeated_trigram(r) for r in blocked.seq.tolist())  # rows 2..5 too (the original missed them)
    assert blocked.seq.size(0) == 6 and (blocked.seq > 0).all()


def test_decoding_constraint_bad_endings_and_unk():
    # preference: 1 > EOS > 2 > UNK(=V) ...
    bias = [-1.0, 0.0, -2.0] + [-9.0] * (V - 3) + [-0.5]
    model = constant_model(bias)
    att = torch.randn(2, 4, C)
    assert sample(model, att).seq[0, :3].tolist() == [1, 1, 1]
    assert sample(model, att, decoding_constraint=True).seq[0, :3].tolist() == [1, 9, 1]
    # UNK suppressed: after 1 the constraint leaves EOS as the best
    assert sample(model, att, decoding_constraint=True, unk_idx=V).seq[0, :3].tolist() == [1, 0, 0]
    # EOS forbidden after a bad ending (1): next best is 2
    out = sample(model, att, decoding_constraint=True, unk_idx=V, bad_ending_ids=[1])
    assert out.seq[0, :4].tolist() == [1, 2, 1, 2]
    beam = beam_search(model, att, beam_size=3, sample_n=3, decoding_constraint=True, unk_idx=V, bad_ending_ids=[1])
    for row in beam.seq.tolist():
        assert all(a != b or a == 0 for a, b in zip(row, row[1:])), row
        assert all(not (a == 1 and b == 0) for a, b in zip(row, row[1:])), row
        assert V not in row, row


def reference_beam_search(model, att, beam_size, length_penalty, max_length):
    """The original's beam search for one image, in plain Python (no diversity groups)."""
    penalty = length_penalty_fn(length_penalty)
    with torch.no_grad():
        memory = model.encode(att).memory

        def next_lps(prefixes):  # equal-length token lists -> one next-token distribution each
            y = model.model.embed_words(torch.tensor([[0] + p for p in prefixes]))
            n = len(prefixes[0]) + 1
            y = model.model.decoder(y, memory.expand(len(prefixes), -1, -1), None,
                                    torch.ones(n, n, dtype=torch.bool).tril().unsqueeze(0))
            return model.model.generator(y[:, -1]).log_softmax(-1).tolist()

        beams = [([], 0.0)]
        dists = next_lps([[]])
        done = []
        for t in range(max_length):
            cands = [(s + lp, b, w) for b, (_, s) in enumerate(beams) for w, lp in enumerate(dists[b])]
            cands = sorted(cands, key=lambda c: -c[0])[:beam_size]
            parents, beams = beams, []
            for total, b, w in cands:
                toks = parents[b][0] + [w]
                ended = w == 0 or t == max_length - 1
                if ended:
                    done.append((float(penalty(t + 1, torch.tensor(total))), toks))
                beams.append((toks, total - 1000 * ended))
            dists = next_lps([toks for toks, _ in beams])
    return sorted(done, key=lambda d: -d[0])


@pytest.mark.parametrize("length_penalty", ["", "wu_0.5", "avg_0"])
def test_beam_search_matches_plain_python_reference(feats, length_penalty):
    att, _ = feats
    model = tiny_model(max_length=6)
    with torch.no_grad():  # EOS competitive, so that finished beams of several lengths compete
        model.model.generator.proj.bias[0] += 1.5
    out = beam_search(model, att, beam_size=3, sample_n=3, length_penalty=length_penalty)
    for i in range(att.size(0)):
        ref = reference_beam_search(model, att[i:i + 1], 3, length_penalty, 6)[:3]
        for k, (score, toks) in enumerate(ref):
            row = out.seq[3 * i + k].tolist()
            assert row[:len(toks)] == toks and all(x == 0 for x in row[len(toks):])
            assert out.scores[3 * i + k].item() == pytest.approx(score, abs=1e-4)


def test_length_penalties_and_bad_arguments(feats):
    s = torch.tensor(-6.0)
    assert length_penalty_fn("")(4, s).item() == -6.0
    assert length_penalty_fn("avg_0.3")(4, s).item() == pytest.approx(-1.5)
    assert length_penalty_fn("wu_1")(4, s).item() == pytest.approx(-6.0 * 6 / 9)
    with pytest.raises(ValueError):
        length_penalty_fn("wu0.5")
    with pytest.raises(ValueError):
        length_penalty_fn("len_1")
    att, masks = feats
    model = tiny_model()
    with pytest.raises(ValueError, match="group_size"):
        beam_search(model, att, beam_size=4, group_size=2)
    with pytest.raises(ValueError, match="sample_n"):
        beam_search(model, att, beam_size=3, sample_n=2)
    with pytest.raises(ValueError, match="method"):
        sample(model, att, method="topk")
    with pytest.raises(ValueError, match="top_k"):
        sample(model, att, top_k=3)
    with pytest.raises(ValueError, match="max_length"):
        sample(model, att, max_length=0)
    assert sample(model, att, max_length=3).seq.shape == (3, 3)
    assert beam_search(model, att, max_length=2).seq.shape == (3, 2)
    with pytest.raises(ValueError, match="cached decoding"):
        model.step(model.encode(att), model.start(model.encode(att), use_cache=True))
