"""Rewards, baselines and the self-critical loss on hand-made inputs (docs/ORIGINAL.md §4.4-4.5)."""
import itertools
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import clip
from captioning.config import RewardConfig
from captioning.metrics.clipscore import CLIPScorer
from captioning.rewards import (
    CiderReward,
    RewardTerm,
    SelfCriticalReward,
    bleu4_reward,
    cider_df_path,
    greedy_baseline,
    leave_one_out_baseline,
    reward_terms,
)
from captioning.training.losses import self_critical_loss
from captioning.utils.io import write_pickle
from clip.grammar import GrammarCLIP

PROMPT = "A photo depicts"


def labels(*rows, width=16):
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def test_cider_reward_on_index_strings(tmp_path):
    # df over two images: every n-gram below occurs in one image only -> idf = log 2 > 0
    df = {"document_frequency": {g: 1 for g in [("1",), ("2",), ("3",), ("0",), ("1", "2"), ("2", "3"), ("3", "0"),
                                                  ("1", "2", "3"), ("2", "3", "0"), ("1", "2", "3", "0")]},
          "ref_len": 2}
    write_pickle(tmp_path / "tiny-idxs.p", {"document_frequency": dict(df["document_frequency"]), "ref_len": df["ref_len"]})
    reward = CiderReward(cider_df_path("tiny-idxs", data_dir=tmp_path))
    gts = [labels([1, 2, 3])]  # one reference: "1 2 3 0"
    seq = torch.tensor([[1, 2, 3, 0, 0], [5, 6, 7, 0, 0], [1, 2, 3, 4, 5]])
    scores = reward(seq, gts, [0, 0, 0])
    # every n-gram weighs log 2 (df 1, or 0 -> max(1, df)), so cosines are overlap counts over norms.
    # identical to its only reference: cosine 1 for n = 1..4, no length penalty -> 10
    assert scores[0] == pytest.approx(10.0)
    # shares only the EOS "0" (it counts as a token): unigram cosine 1 / (2 * 2), nothing else
    assert scores[1] == pytest.approx(10 * (1 / 4) / 4)
    # "1 2 3 4 5" (cut at the length limit, no "0") vs "1 2 3 0": 3 of 5/4 unigrams, 2 of 4/3 bigrams,
    # 1 of 3/2 trigrams, no 4-gram; bigram counts 4 vs 3 -> penalty exp(-1 / (2 * 6^2))
    expected = 10 * np.exp(-1 / 72) * (3 / (np.sqrt(5) * 2) + 2 / (2 * np.sqrt(3)) + 1 / (np.sqrt(3) * np.sqrt(2))) / 4
    assert scores[2] == pytest.approx(expected)


def test_cider_df_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "coco-train-idxs.p").write_bytes(b"")
    (tmp_path / "elsewhere.p").write_bytes(b"")
    assert str(cider_df_path("coco-train-idxs")) == "data/coco-train-idxs.p"
    assert str(cider_df_path(str(tmp_path / "elsewhere.p"))) == str(tmp_path / "elsewhere.p")
    with pytest.raises(FileNotFoundError, match="prepro_ngrams"):
        cider_df_path("missing-idxs")


def test_bleu4_reward():
    gts = [labels([1, 2, 3, 4, 5])]
    seq = torch.tensor([[1, 2, 3, 4, 5, 0], [6, 7, 8, 9, 10, 0]])
    scores = bleu4_reward(seq, gts, [0, 0])
    assert scores[0] == pytest.approx(1.0, abs=1e-6)
    assert scores[1] < 1e-6


def test_baselines_hand_values():
    s = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    assert leave_one_out_baseline(s).tolist() == [[2.5, 2.0, 1.5], [3.0, 3.0, 0.0]]
    assert greedy_baseline(torch.tensor([5.0, 1.0]), 3).tolist() == [[5.0] * 3, [1.0] * 3]
    with pytest.raises(ValueError, match="train_sample_n >= 2"):
        leave_one_out_baseline(torch.ones(2, 1))


def test_self_critical_loss_hand_example():
    seq = torch.tensor([[5, 0, 0, 0], [3, 4, 6, 7]])
    lp = torch.tensor([[-1.0, -2.0, 0.0, 0.0], [-0.5, -0.5, -1.0, -2.0]], requires_grad=True)
    adv = torch.tensor([1.0, -2.0])
    # mask: row 0 keeps t=0 and the EOS at t=1; row 1 has no EOS and keeps all 4 -> 6 tokens
    expected = -((-1.0 - 2.0) * 1.0 + (-0.5 - 0.5 - 1.0 - 2.0) * -2.0) / 6
    loss = self_critical_loss(lp, seq, adv)
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    assert lp.grad.flatten().tolist() == pytest.approx([-1 / 6, -1 / 6, 0, 0] + [2 / 6] * 4)


class StubCider:
    """CIDEr stand-in: a row's score is its first token."""

    def __call__(self, seq, gts, image_index):
        return seq[:, 0].double().numpy()


class StubCLIP:
    """CLIP stand-in: pooled = emb = number of words; CLIP-S = image * words; grammar = words / 10."""

    has_grammar_head = True

    def encode(self, captions):
        n = torch.tensor([[float(len(c.split()))] for c in captions])
        return n, n

    def clip_s(self, image_feats, emb):
        return image_feats[:, 0] * emb[:, 0]

    def grammar(self, pooled):
        return pooled[:, 0] / 10


VOCAB = {str(i): f"w{i}" for i in range(1, 10)}


def test_advantages_greedy_and_leave_one_out():
    # 2 images x 2 samples; CIDEr stub = first token
    samples = torch.tensor([[3, 0], [1, 0], [4, 0], [8, 0]])
    greedy = torch.tensor([[2, 0], [5, 0]])
    gts = [labels([1]), labels([1])]
    reward = SelfCriticalReward([RewardTerm("CIDEr", 0.5)], VOCAB, "greedy", cider=StubCider())
    out = reward(samples, greedy, gts)
    assert out.advantage.tolist() == pytest.approx([0.5 * (3 - 2), 0.5 * (1 - 2), 0.5 * (4 - 5), 0.5 * (8 - 5)])
    assert out.stats["CIDEr"] == pytest.approx(4.0) and out.stats["reward"] == pytest.approx(0.25)
    assert out.stats["CIDEr_greedy"] == pytest.approx(3.5)
    loo = SelfCriticalReward([RewardTerm("CIDEr", 0.5)], VOCAB, "mean", cider=StubCider())
    out = loo(samples, None, gts)
    assert out.advantage.tolist() == pytest.approx([0.5 * (3 - 1), 0.5 * (1 - 3), 0.5 * (4 - 8), 0.5 * (8 - 4)])


def test_clip_and_unbaselined_grammar_terms():
    # captions of 1, 3, 2 words (sample, sample) and a greedy one of 2 words; image feature 0.5
    samples = torch.tensor([[1, 0, 0], [1, 2, 3]])
    greedy = torch.tensor([[4, 5, 0]])
    terms = [RewardTerm("CLIP-S", 2.0), RewardTerm("grammar", 1.0, baselined=False)]
    reward = SelfCriticalReward(terms, VOCAB, "greedy", clip=StubCLIP())
    out = reward(samples, greedy, [labels([1])], torch.tensor([[0.5]]))
    # 2 * (0.5 * words - 0.5 * 2) + words / 10
    assert out.advantage.tolist() == pytest.approx([2 * (0.5 - 1.0) + 0.1, 2 * (1.5 - 1.0) + 0.3])
    assert out.stats["CLIP-S"] == pytest.approx(1.0) and out.stats["grammar_reward"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="clip_vis_feats"):
        reward(samples, greedy, [labels([1])], None)


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return clip.CLIP(**clip.tiny_clip_config("resnet")).eval()


def text_embedding(model, texts):
    tokens = clip.tokenize(texts, context_length=model.context_length)
    with torch.no_grad():
        return F.normalize(model.encode_text(tokens), dim=-1)


def test_clip_s_reward_is_2_5_when_text_equals_image(tiny_clip):
    vocab = {"1": "a", "2": "red", "3": "circle", "4": "UNK"}
    seq = torch.tensor([[1, 2, 3, 0], [1, 4, 3, 0], [1, 2, 3, 0]])
    emb = text_embedding(tiny_clip, [f"{PROMPT} a red circle", f"{PROMPT} a UNK circle"])
    image = torch.stack([3 * emb[0], emb[1], -emb[0]])  # scale must not matter; opposite gives 0
    reward_clip = CLIPScorer(GrammarCLIP(tiny_clip, with_head=False))
    reward = SelfCriticalReward([RewardTerm("CLIP-S", 2.0)], vocab, "mean", clip=reward_clip)
    scores = reward.scores(seq, np.arange(3), [labels([1])] * 3, image)
    assert scores["CLIP-S"].tolist() == pytest.approx([2.5, 2.5, 0.0], abs=1e-5)


def test_refclip_s_reward_hand_value(tiny_clip):
    vocab = {"1": "a", "2": "red", "3": "circle"}
    emb = text_embedding(tiny_clip, [f"{PROMPT} a red circle"])[0]
    orth = torch.randn(emb.shape[0])
    orth = F.normalize(orth - (orth @ emb) * emb, dim=0)
    image = torch.stack([0.6 * emb + 0.8 * orth, emb])  # cos 0.6 and 1
    reward = SelfCriticalReward([RewardTerm("RefCLIP-S", 2.0)], vocab, "mean",
                                clip=CLIPScorer(GrammarCLIP(tiny_clip, with_head=False)))
    seq = torch.tensor([[1, 2, 3, 0]] * 2)
    scores = reward.scores(seq, np.arange(2), [labels([1, 2, 3])] * 2, image)  # the reference is the caption
    # CLIP-S 2.5 * 0.6 = 1.5, reference side 2.5 * 1 -> harmonic mean 2 * 1.5 * 2.5 / 4
    assert scores["CLIP-S"].tolist() == pytest.approx([1.5, 2.5], abs=1e-5)
    assert scores["RefCLIP-S"].tolist() == pytest.approx([1.875, 2.5], abs=1e-5)


def test_grammar_reward_prefers_original_over_shuffled(tiny_clip):
    words = ["a", "red", "blue", "green", "circle", "square", "star", "left", "of", "above", "below", "the"]
    vocab = {str(i + 1): w for i, w in enumerate(words)}
    ix = {w: i + 1 for i, w in enumerate(words)}
    rng = random.Random(0)
    captions = [f"a {c1} {s1} {rel} a {c2} {s2}" for c1, s1, rel, c2, s2 in itertools.product(
        ["red", "blue", "green"], ["circle", "square", "star"], ["left of", "above", "below"], ["red", "blue"],
        ["circle", "star"])]
    rng.shuffle(captions)
    captions = captions[:60]

    def shuffled(text):
        tokens = text.split()
        while True:
            rng.shuffle(tokens)
            if " ".join(tokens) != text:
                return " ".join(tokens)

    negatives = [shuffled(c) for c in captions]
    model = GrammarCLIP(tiny_clip, with_head=True)
    texts = [f"{PROMPT} {c}" for c in captions + negatives]
    with torch.no_grad():
        pooled = tiny_clip.encode_text_pooled(clip.tokenize(texts, context_length=tiny_clip.context_length))
    target = torch.tensor([1] * len(captions) + [0] * len(negatives))
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.grammar_head.parameters(), lr=3e-3)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model.grammar_head(pooled), target).backward()
        opt.step()

    seq = torch.zeros(20, 10, dtype=torch.long)
    for row, text in enumerate(captions[:10] + negatives[:10]):
        seq[row, : len(text.split())] = torch.tensor([ix[w] for w in text.split()])
    reward = SelfCriticalReward([RewardTerm("grammar", 1.0, baselined=False)], vocab, "mean",
                                clip=CLIPScorer(model))
    g = reward.scores(seq, np.arange(20), [labels([1])] * 20)["grammar"]
    assert (g[:10] > g[10:]).all(), g


def test_reward_terms_of_the_four_rewards():
    def names(**kw):
        return [(t.name, t.weight, t.baselined) for t in reward_terms(RewardConfig(**kw))]

    assert names() == [("CIDEr", 1.0, True)]
    assert names(bleu_reward_weight=0.5) == [("CIDEr", 1.0, True), ("Bleu_4", 0.5, True)]
    clips = dict(use_clipscore=True, clipscore_reward_weight=2.0)
    assert names(**clips) == [("CLIP-S", 2.0, True)]
    assert names(**clips, use_multi_rewards=True) == [("CIDEr", 1.0, True), ("CLIP-S", 2.0, True)]
    assert names(**clips, use_multi_rewards=True, use_grammar=True, use_grammar_baseline=True) == [
        ("CLIP-S", 2.0, True), ("grammar", 1.0, True)]
    assert names(**clips, use_multi_rewards=True, use_grammar=True)[-1] == ("grammar", 1.0, False)
    assert names(**clips, clipscore_mode="refclip_s") == [("RefCLIP-S", 2.0, True)]
    with pytest.raises(ValueError, match="needs use_clipscore"):
        reward_terms(RewardConfig(use_multi_rewards=True))
    with pytest.raises(ValueError, match="use_grammar needs"):
        reward_terms(RewardConfig(use_clipscore=True, use_grammar=True))
    with pytest.raises(ValueError, match="no term"):
        reward_terms(RewardConfig(cider_reward_weight=0.0))
