import pytest
import torch

from captioning.metrics.clipscore import CLIPScorer, clip_s, harmonic_mean, refclip_s, refclip_s_hessel

# Hand-made unit vectors: image v, candidate c with cos(c, v) = 0.6.
V = torch.tensor([1.0, 0.0, 0.0])
C = torch.tensor([0.6, 0.8, 0.0])
R1 = torch.tensor([0.0, 1.0, 0.0])  # cos(c, r1) = 0.8
R2 = torch.tensor([1.0, 0.0, 0.0])  # cos(c, r2) = 0.6
NEG = torch.tensor([-1.0, 0.0, 0.0])  # cos(NEG, v) = -1


def test_clip_s_hand_values_and_scale_invariance():
    scores = clip_s(torch.stack([V, V]), torch.stack([C, NEG]))
    assert scores.tolist() == pytest.approx([2.5 * 0.6, 0.0])
    assert clip_s(3 * V[None], 7 * C[None]).item() == pytest.approx(1.5)  # features are normalised


def test_refclip_s_original_and_hessel():
    cs = torch.tensor([1.5])
    refs = torch.stack([R1, R2, C])[None]  # third ref (cos 1) is padding and must be ignored
    mask = torch.tensor([[True, True, False]])
    # original: R = 2.5 * 0.8 = 2.0 -> 2 * 1.5 * 2.0 / 3.5
    assert refclip_s(cs, C[None], refs, mask).item() == pytest.approx(6.0 / 3.5)
    # Hessel: R = 0.8 -> 2 * 1.5 * 0.8 / 2.3
    assert refclip_s_hessel(cs, C[None], refs, mask).item() == pytest.approx(2.4 / 2.3)


def test_zero_sides_give_zero_not_nan():
    assert harmonic_mean(torch.tensor([0.0, 1.0, 0.0]), torch.tensor([2.0, 0.0, 0.0])).tolist() == [0.0, 0.0, 0.0]
    refs = torch.stack([R1])[None]
    out = refclip_s(torch.tensor([0.0]), C[None], refs, torch.tensor([[True]]))
    assert out.item() == 0.0
    # every reference negative or masked -> reference side 0 -> 0
    out = refclip_s_hessel(torch.tensor([1.5]), C[None], (-C)[None, None], torch.tensor([[True]]))
    assert out.item() == 0.0


class FakeEncoder:
    """A stand-in CLIP: maps prompted strings to fixed vectors and records every batch it encodes."""

    grammar_head = None
    device = torch.device("cpu")

    def __init__(self, table):
        self.table = table
        self.calls = []

    def tokenize(self, texts, prompt=None):
        return [f"{prompt} {t}" if prompt else t for t in texts]

    def text_features(self, tokens):
        self.calls.append(list(tokens))
        emb = torch.stack([5.0 * self.table[t] for t in tokens])  # unnormalised on purpose
        return emb, emb


def test_scorer_prompt_dedup_cache_and_values():
    table = {
        "A photo depicts a dog": C,
        "A photo depicts a cat": NEG,
        "A photo depicts ref one": R1,
        "A photo depicts ref two": R2,
    }
    enc = FakeEncoder(table)
    scorer = CLIPScorer(enc, batch_size=2)
    images = torch.stack([V, V, V])
    captions = ["a dog", "a cat", "a dog"]
    refs = [["ref one", "ref two"], ["ref one"], ["ref two"]]
    out = scorer.score(images, captions, refs)

    assert out["CLIP-S"].tolist() == pytest.approx([1.5, 0.0, 1.5])
    # image 0: R = 2.5*0.8; image 1: CLIP-S 0 -> 0; image 2: only ref two, R = 2.5*0.6 = 1.5
    assert out["RefCLIP-S"].tolist() == pytest.approx([6.0 / 3.5, 0.0, 1.5])
    assert out["RefCLIP-S-Hessel"].tolist() == pytest.approx([2.4 / 2.3, 0.0, 2 * 1.5 * 0.6 / 2.1])
    # every unique string once, in batches of at most 2, with the prompt and a space
    encoded = [t for call in enc.calls for t in call]
    assert sorted(encoded) == sorted(table)
    assert all(len(call) <= 2 for call in enc.calls)

    enc.calls.clear()
    scorer.score(images[:1], ["a cat"], [["ref one", "ref two"]])
    assert enc.calls == [["A photo depicts a cat"]]  # references come from the cache


def test_scorer_rejects_mismatched_inputs():
    scorer = CLIPScorer(FakeEncoder({"A photo depicts x": C}))
    with pytest.raises(ValueError):
        scorer.score(torch.stack([V, V]), ["x"])
    with pytest.raises(ValueError):
        scorer.score(V[None], ["x"], [["x"], ["x"]])
