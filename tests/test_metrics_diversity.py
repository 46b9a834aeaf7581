import pytest

from captioning.metrics.diversity import BAD_ENDINGS, bad_count_rate, distinct_n, diversity_stats

CAPTIONS = ["a dog on the grass", "a dog on a", "the cat", ""]


def test_diversity_stats_hand_worked():
    stats = diversity_stats(CAPTIONS)
    # words: a dog on the grass | a dog on a | the cat -> 11 tokens, 6 types
    assert stats["vocab_size"] == 6
    assert stats["mean_length"] == pytest.approx(11 / 4)
    assert stats["distinct_1"] == pytest.approx(6 / 11)
    # bigrams: (a dog)(dog on)(on the)(the grass) (a dog)(dog on)(on a) (the cat): 8 total, 6 distinct
    assert stats["distinct_2"] == pytest.approx(6 / 8)
    # only "a dog on a" ends in a bad word; the empty caption does not count
    assert stats["bad_count_rate"] == pytest.approx(1 / 4)


def test_bad_endings_list_and_rate():
    assert set(BAD_ENDINGS) == set("with in on of a at to for an this his her that the".split())
    assert bad_count_rate(["a man with", "a man riding", "a bowl of", "his"]) == pytest.approx(3 / 4)


def test_distinct_n_edge_cases():
    assert distinct_n(["a", "b"], 2) == 0.0  # no bigrams at all
    assert distinct_n(["a a a"], 1) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        distinct_n(["a"], 0)
    with pytest.raises(ValueError):
        diversity_stats([])
