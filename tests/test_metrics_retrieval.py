import numpy as np
import pytest
import torch

from captioning.metrics.retrieval import image_text_retrieval, retrieval_metrics, retrieval_ranks

SIM = [
    [0.9, 0.1, 0.3, 0.2],
    [0.8, 0.5, 0.1, 0.0],
    [0.2, 0.6, 0.4, 0.7],
    [0.1, 0.2, 0.3, 0.05],
]


def test_hand_worked_4x4_both_directions():
    out = image_text_retrieval(np.array(SIM))
    # rows: the match is beaten by 0, 1 (0.8), 2 (0.6, 0.7) and 3 (0.1, 0.2, 0.3) items
    assert retrieval_ranks(np.array(SIM)).tolist() == [0, 1, 2, 3]
    i2t = out["i2t"]
    assert i2t["R@1"] == pytest.approx(25.0)
    assert i2t["R@5"] == i2t["R@10"] == i2t["R@50"] == pytest.approx(100.0)
    assert i2t["medr"] == 2.0  # floor(median(0,1,2,3) = 1.5) + 1
    assert i2t["meanr"] == pytest.approx(2.5)
    assert i2t["sum"] == pytest.approx(225.0)
    # columns: ranks 0, 1 (0.6 > 0.5), 0, 2 (0.2, 0.7 > 0.05)
    t2i = out["t2i"]
    assert t2i["R@1"] == pytest.approx(50.0)
    assert t2i["medr"] == 1.0  # floor(0.5) + 1
    assert t2i["meanr"] == pytest.approx(1.75)
    assert t2i["sum"] == pytest.approx(250.0)


def _argsort_ranks(sim):
    """The original's loop: position of the match in the row sorted by decreasing similarity."""
    return np.array([np.where(np.argsort(row)[::-1] == i)[0][0] for i, row in enumerate(sim)])


def test_matches_argsort_formulation_on_random_matrix():
    sim = np.random.default_rng(0).normal(size=(60, 60))
    ranks = _argsort_ranks(sim)
    out = retrieval_metrics(torch.from_numpy(sim))
    assert retrieval_ranks(sim).tolist() == ranks.tolist()
    for k in (1, 5, 10, 50):
        assert out[f"R@{k}"] == pytest.approx(100.0 * np.mean(ranks < k))
    assert out["medr"] == np.floor(np.median(ranks)) + 1
    assert out["meanr"] == pytest.approx(ranks.mean() + 1)


def test_ties_are_ranked_pessimistically_and_bad_input():
    assert retrieval_ranks(np.ones((3, 3))).tolist() == [2, 2, 2]
    sim = np.array([[1.0, 1.0, 0.0], [0.5, 0.9, 0.9], [0.0, 0.0, 0.3]])  # row 0 tied with 1, row 1 with 2
    assert retrieval_ranks(sim).tolist() == [1, 1, 0]
    assert image_text_retrieval(np.zeros((4, 4)))["t2i"]["R@1"] == 0.0  # identical (e.g. empty) captions
    with pytest.raises(ValueError):
        retrieval_metrics(np.zeros((2, 3)))
    with pytest.raises(ValueError):
        retrieval_metrics(np.array([[np.nan, 0.0], [0.0, 1.0]]))
