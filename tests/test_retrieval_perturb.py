"""Negative captions of the grammar fine-tuning: each perturbation's properties, short captions included."""
import random
from collections import Counter

import pytest

from retrieval.perturb import PERTURBATIONS, applicable, insert, perturb, remove, repeat, shuffle, swap, vocabulary

VOCAB = ["a", "man", "riding", "horse", "on", "the", "beach", "dog", "red", "ball"]
CAPTIONS = [["a", "man", "riding", "a", "horse", "on", "the", "beach"], ["dog"], ["a", "dog"], ["dog", "dog"]]


def _is_subsequence(short, long):
    it = iter(long)
    return all(any(w == x for x in it) for w in short)


def _draws(fn, caption, n=300, seed=0):
    rng = random.Random(seed)
    return [fn(caption, rng) for _ in range(n)]


@pytest.mark.parametrize("caption", CAPTIONS)
def test_repeat_adds_copies_of_one_ngram(caption):
    for neg in _draws(repeat, caption):
        added = len(neg) - len(caption)
        assert neg != caption and 1 <= added <= 9
        assert _is_subsequence(caption, neg)
        extra = Counter(neg) - Counter(caption)
        assert set(extra) <= set(caption)
        # the added words are r copies of an n-gram: the total is a multiple of some n in 1..3 and r in 1..3
        assert any(added == n * r for n in range(1, min(3, len(caption)) + 1) for r in range(1, 4))


@pytest.mark.parametrize("caption", CAPTIONS)
def test_remove_deletes_one_contiguous_ngram(caption):
    for neg in _draws(remove, caption):
        n = len(caption) - len(neg)
        assert 1 <= n <= min(3, len(caption)) and neg != caption
        assert any(caption[:s] + caption[s + n:] == neg for s in range(len(caption) - n + 1))


@pytest.mark.parametrize("caption", CAPTIONS)
def test_insert_adds_vocabulary_words_anywhere_including_the_end(caption):
    draws = _draws(lambda c, r: insert(c, VOCAB, r), caption)
    for neg in draws:
        assert 1 <= len(neg) - len(caption) <= 3 and neg != caption
        assert _is_subsequence(caption, neg)
        assert set((Counter(neg) - Counter(caption))) <= set(VOCAB)
    # the original never appended at the end; the fixed one does
    assert any(neg[:len(caption)] == caption and len(neg) > len(caption) for neg in draws)


@pytest.mark.parametrize("caption", CAPTIONS)
def test_swap_changes_one_to_three_positions_to_other_words(caption):
    for neg in _draws(lambda c, r: swap(c, VOCAB, r), caption):
        changed = [i for i, (a, b) in enumerate(zip(caption, neg)) if a != b]
        assert len(neg) == len(caption)
        assert 1 <= len(changed) <= min(3, len(caption))
        assert all(neg[i] in VOCAB for i in changed)


@pytest.mark.parametrize("caption", [c for c in CAPTIONS if len(set(c)) > 1])
def test_shuffle_reorders_and_never_returns_the_original(caption):
    for neg in _draws(shuffle, caption):
        assert sorted(neg) == sorted(caption) and neg != caption


@pytest.mark.parametrize("caption", [["dog"], ["dog", "dog"]])
def test_shuffle_is_refused_and_never_drawn_when_no_order_can_change(caption):
    with pytest.raises(ValueError):
        shuffle(caption, random.Random(0))
    assert "shuffle" not in applicable(caption)
    rng = random.Random(1)
    kinds = {perturb(caption, VOCAB, rng)[1] for _ in range(200)}
    assert kinds == {"repeat", "remove", "insert", "swap"}


def test_types_are_uniform_and_negatives_never_equal_the_positive():
    rng = random.Random(3)
    counts = Counter()
    for _ in range(5000):
        neg, kind = perturb(CAPTIONS[0], VOCAB, rng)
        assert neg != CAPTIONS[0]
        counts[kind] += 1
    assert set(counts) == set(PERTURBATIONS)
    # 1000 expected per type; 5 standard deviations is about 140
    assert all(abs(c - 1000) < 140 for c in counts.values()), counts


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="empty"):
        perturb([], VOCAB, random.Random(0))
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb(["a", "dog"], VOCAB, random.Random(0), kind="rotate")
    with pytest.raises(ValueError, match="two different words"):
        swap(["a", "dog"], ["dog"], random.Random(0))


def test_vocabulary_drops_unk_and_keeps_index_order():
    assert vocabulary({"2": "dog", "1": "a", "10": "ball", "11": "UNK"}) == ["a", "dog", "ball"]
