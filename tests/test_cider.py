"""CIDEr-D / CIDEr: parity with pycocoevalcap, with a loop-based reading of the formula, and a hand-worked case."""
from __future__ import annotations

import math
import random
from collections import defaultdict

import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider as CocoCider
from pycocoevalcap.cider.cider_scorer import CiderScorer

from cider import Cider, CiderD, document_frequency, index_strings

TOL = 1e-9

NATURAL_GTS = {
    "img1": [
        "a man riding a wave on top of a surfboard",
        "a surfer rides a large wave in the ocean",
        "a person on a surfboard riding a wave",
        "a man surfing on a big blue wave",
        "a surfer in a wetsuit riding a wave",
    ],
    "img2": [
        "two dogs playing with a frisbee in the grass",
        "a couple of dogs running in a field",
        "two dogs chase a frisbee on a lawn",
    ],
    "img3": ["a plate of food with broccoli and rice", "a white plate topped with rice and vegetables"],
    "img4": ["a red double decker bus driving down a street"],
    "img5": [
        "a cat sitting on a laptop keyboard",
        "a cat laying on top of a laptop computer",
        "a cat sitting on a laptop keyboard",  # duplicated reference
        "a grey cat resting on an open laptop",
    ],
    "img6": ["a kitchen with a stove and a refrigerator", "a small kitchen with white cabinets and a stove"],
}
NATURAL_RES = {
    "img1": ["a man riding a wave on a surfboard"],
    "img2": ["two dogs playing in the grass"],
    "img3": ["a plate of food"],
    "img4": ["a bus"],  # fewer than 4 words
    "img5": ["a cat sitting on a laptop keyboard"],
    "img6": [""],  # empty candidate
}


def random_text(rng: random.Random, vocab: list[str], max_len: int = 12) -> str:
    return " ".join(rng.choice(vocab) for _ in range(rng.randint(0, max_len)))


def random_dataset(seed: int, n_images: int, vocab_size: int = 12) -> tuple[dict, dict]:
    """Small vocabulary, so that n-grams repeat; 1-5 refs, some duplicated, some empty texts."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(vocab_size)]
    gts, res = {}, {}
    for image in range(n_images):
        refs = [random_text(rng, vocab) for _ in range(rng.randint(1, 5))]
        if rng.random() < 0.2:
            refs.append(refs[0])
        gts[image] = refs
        res[image] = [random_text(rng, vocab)]
    return gts, res


def reference_cider(cand, refs, df, log_ref_len, n=4, sigma=6.0, clipped=True, penalty=True) -> float:
    """The CIDEr(-D) formula read literally, one candidate at a time, with Python loops."""

    def vectors(text):
        words = text.split()
        vec = [defaultdict(float) for _ in range(n)]
        for k in range(1, n + 1):
            for i in range(len(words) - k + 1):
                vec[k - 1][tuple(words[i : i + k])] += 1.0
        for k in range(n):
            for g, tf in vec[k].items():
                vec[k][g] = tf * (log_ref_len - math.log(max(1.0, df.get(g, 0.0))))
        norms = [math.sqrt(sum(v * v for v in vk.values())) for vk in vec]
        n_bigrams = max(len(words) - 1, 0) if n >= 2 else 0
        return vec, norms, n_bigrams

    vec_c, norm_c, len_c = vectors(cand)
    total = 0.0
    for ref in refs:
        vec_r, norm_r, len_r = vectors(ref)
        per_order = []
        for k in range(n):
            s = sum((min(v, vec_r[k][g]) if clipped else v) * vec_r[k][g] for g, v in vec_c[k].items() if g in vec_r[k])
            if norm_c[k] != 0 and norm_r[k] != 0:
                s /= norm_c[k] * norm_r[k]
            if penalty:
                s *= math.exp(-((len_c - len_r) ** 2) / (2 * sigma**2))
            per_order.append(s)
        total += sum(per_order) / n
    return 10.0 * total / len(refs)


def corpus_df(ref_sets) -> dict:
    """df over documents = reference sets, counted with a set of n-gram tuples per document."""
    df = defaultdict(float)
    for refs in ref_sets:
        seen = set()
        for ref in refs:
            words = ref.split()
            seen.update(tuple(words[i : i + k]) for k in range(1, 5) for i in range(len(words) - k + 1))
        for g in seen:
            df[g] += 1
    return df


class FixedDfCocoScorer(CiderScorer):
    """pycocoevalcap's scorer with document_frequency and ref_len taken from a df file (its own
    ``compute_cider`` would reset ref_len to log(#entries); the property ignores that)."""

    ref_len = property(lambda self: self._fixed, lambda self, value: None)

    def __init__(self, df: dict, n_images: int):
        super().__init__()
        self._fixed = np.log(float(n_images))
        self.document_frequency = defaultdict(float, df)


@pytest.mark.parametrize("seed", [0, 1])
def test_corpus_mode_matches_pycocoevalcap_on_random_text(seed):
    gts, res = random_dataset(seed, n_images=120)
    expected_mean, expected = CocoCider().compute_score(gts, res)
    mean, scores = CiderD(df="corpus").compute_score(gts, res)
    assert scores.shape == (120,)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=TOL)
    assert abs(mean - expected_mean) <= TOL
    assert (expected > 0).sum() > 30  # the data exercise real matches, not just zeros


def test_corpus_mode_matches_pycocoevalcap_on_natural_text():
    expected_mean, expected = CocoCider().compute_score(NATURAL_GTS, NATURAL_RES)
    mean, scores = CiderD().compute_score(NATURAL_GTS, NATURAL_RES)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=TOL)
    assert abs(mean - expected_mean) <= TOL
    assert scores[-1] == 0.0  # empty candidate
    assert scores[0] > 1.0


def test_list_style_with_repeated_images_matches_pyciderevalcap_semantics():
    # pyciderevalcap adds one (candidate, refs) entry per res item; in corpus mode each entry's
    # refs are a document and ref_len is the number of entries.
    gts, res_dict = random_dataset(2, n_images=40)
    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(12)]
    res = [{"image_id": i, "caption": [random_text(rng, vocab)]} for i in gts for _ in range(3)]
    rng.shuffle(res)
    coco = CiderScorer()
    for entry in res:
        coco += (entry["caption"][0], gts[entry["image_id"]])
    expected_mean, expected = coco.compute_score()
    mean, scores = CiderD(df="corpus").compute_score(gts, res)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=TOL)
    assert abs(mean - expected_mean) <= TOL


def df_file_setup(seed: int):
    gts, res = random_dataset(seed, n_images=60, vocab_size=15)
    train_gts, _ = random_dataset(seed + 100, n_images=200, vocab_size=18)  # words w15..w17 never scored
    df, n_images = document_frequency(train_gts.values())
    # drop some n-grams: they must count as df 0, i.e. log(max(1, 0)) = 0
    df = {g: c for i, (g, c) in enumerate(df.items()) if i % 7}
    return gts, res, df, n_images


@pytest.mark.parametrize("seed", [0, 1])
def test_df_file_mode_matches_loop_formula_and_pycocoevalcap_with_fixed_df(seed):
    gts, res, df, n_images = df_file_setup(seed)
    scorer = CiderD(df={"document_frequency": df, "ref_len": n_images})
    _, scores = scorer.compute_score(gts, res)
    loop = [reference_cider(res[i][0], gts[i], df, math.log(n_images)) for i in gts]
    np.testing.assert_allclose(scores, loop, rtol=0, atol=TOL)
    coco = FixedDfCocoScorer(df, n_images)
    for i in gts:
        coco += (res[i][0], gts[i])
    np.testing.assert_allclose(scores, coco.compute_cider(), rtol=0, atol=TOL)
    assert (scores > 0).sum() > 20


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_plain_cider_and_other_orders_match_loop_formula(n):
    gts, res, df, n_images = df_file_setup(4)
    ids = list(gts)
    for clipped, cls in ((True, CiderD), (False, Cider)):
        _, scores = cls(n=n, df={"document_frequency": df, "ref_len": n_images}).compute_score(gts, res)
        loop = [reference_cider(res[i][0], gts[i], df, math.log(n_images), n, 6.0, clipped, clipped) for i in ids]
        np.testing.assert_allclose(scores, loop, rtol=0, atol=TOL)
        # corpus mode: df over the scored images' reference sets, ref_len = #images
        _, scores = cls(n=n).compute_score(gts, res)
        cdf = corpus_df(gts.values())
        loop = [reference_cider(res[i][0], gts[i], cdf, math.log(len(ids)), n, 6.0, clipped, clipped) for i in ids]
        np.testing.assert_allclose(scores, loop, rtol=0, atol=TOL)


def test_sigma_changes_only_the_length_penalty():
    gts, res, df, n_images = df_file_setup(5)
    _, scores = CiderD(sigma=2.5, df={"document_frequency": df, "ref_len": n_images}).compute_score(gts, res)
    loop = [reference_cider(res[i][0], gts[i], df, math.log(n_images), sigma=2.5) for i in gts]
    np.testing.assert_allclose(scores, loop, rtol=0, atol=TOL)


def test_hand_worked_example():
    # ref_len 10, df('a') = 10 -> idf(a) = ln10 - ln10 = 0; every other n-gram has df 0 -> idf L = ln 10.
    # candidate "b b a": order 1 {b: 2L, a: 0}, |.| = 2L; order 2 {bb: L, ba: L}; order 3 {bba: L}; 2 bigrams.
    # ref1 "a b":   order 1 {a: 0, b: L}, |.| = L; order 2 {ab: L}; 1 bigram.
    #   o1: min(2L, L) * L / (2L * L) = 1/2 ; o2..o4: no shared n-gram -> 0 ; mean = 1/8
    #   length penalty exp(-(2 - 1)^2 / 72) = 0.98620711674  -> 0.12327588959
    # ref2 "b c b": order 1 {b: 2L, c: L}, |.| = L sqrt5; 2 bigrams (no penalty).
    #   o1: min(2L, 2L) * 2L / (2L * L sqrt5) = 2/sqrt5 = 0.89442719100 ; others 0 ; mean = 0.22360679775
    # CIDEr-D = 10 * (0.12327588959 + 0.22360679775) / 2 = 1.73441343671
    # CIDEr (no clipping, no penalty): ref1 o1 = 2L * L / (2L * L) = 1 -> mean 1/4;
    #   = 10 * (0.25 + 0.22360679775) / 2 = 2.36803398875
    df = {"document_frequency": {("a",): 10}, "ref_len": 10}
    gts = {7: ["a b", "b c b"]}
    res = [{"image_id": 7, "caption": ["b b a"]}]
    assert CiderD(df=df).compute_score(gts, res)[1][0] == pytest.approx(1.73441343671, abs=1e-10)
    assert Cider(df=df).compute_score(gts, res)[1][0] == pytest.approx(2.36803398875, abs=1e-10)


def test_edge_cases_against_pycocoevalcap():
    gts = {
        "one_ref": ["a b c d e"],
        "dup_refs": ["a b c", "a b c", "c d"],
        "short": ["a b c d e f", "b c"],
        "empty_cand": ["a b"],
        "empty_ref": ["", "a b c"],
        "unseen": ["a b c"],
    }
    res = {
        "one_ref": ["a b c d"],
        "dup_refs": ["a b"],
        "short": ["b"],
        "empty_cand": [""],
        "empty_ref": ["a b"],
        "unseen": ["x y z a"],
    }
    _, expected = CocoCider().compute_score(gts, res)
    _, scores = CiderD().compute_score(gts, res)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=TOL)
    assert scores[3] == 0.0


def test_score_with_image_index_matches_compute_score_and_ignores_unused_images():
    gts, res, df, n_images = df_file_setup(6)
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(15)]
    images = list(gts)
    entries = [(i, random_text(rng, vocab)) for i in images for _ in range(5)]
    for mode in ("corpus", {"document_frequency": df, "ref_len": n_images}):
        scorer = CiderD(df=mode)
        _, expected = scorer.compute_score(gts, [{"image_id": i, "caption": [c]} for i, c in entries])
        refs = [gts[i] for i in images] + [["w1 w2 w3", "w3 w4"]]  # last reference set: no candidate
        got = scorer.score([c for _, c in entries], refs, [images.index(i) for i, _ in entries])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    one_to_one = CiderD().score([res[i][0] for i in images], [gts[i] for i in images])
    np.testing.assert_allclose(one_to_one, CocoCider().compute_score(gts, res)[1], rtol=0, atol=TOL)


def test_scst_batch_matches_the_original_reward_recipe():
    # B images, K samples each plus one greedy caption; the original scores B*K + B entries, each
    # with a copy of its image's reference strings (array_to_str of the label rows)
    rng = np.random.default_rng(0)
    B, K, L = 4, 3, 10
    labels = [rng.integers(1, 9, size=(int(rng.integers(1, 4)), 16)) for _ in range(B)]
    for rows in labels:
        for row in rows:
            row[rng.integers(2, 17) :] = 0
    samples = rng.integers(0, 9, size=(B * K, L))
    greedy = rng.integers(0, 9, size=(B, L))
    train_refs = [index_strings(rng.integers(0, 9, size=(3, 12))) for _ in range(30)]
    df, n_images = document_frequency(train_refs)
    refs = [index_strings(rows) for rows in labels]
    candidates = index_strings(samples) + index_strings(greedy)
    image_index = np.concatenate([np.repeat(np.arange(B), K), np.arange(B)])
    got = CiderD(df={"document_frequency": df, "ref_len": n_images}).score(candidates, refs, image_index)
    coco = FixedDfCocoScorer(df, n_images)
    for cand, image in zip(candidates, image_index):
        coco += (cand, refs[image])
    np.testing.assert_allclose(got, coco.compute_cider(), rtol=0, atol=TOL)
    assert (got > 0).sum() > 5


def test_texts_without_ngrams_score_zero():
    assert CiderD().score(["", ""], [[""], ["", ""]]).tolist() == [0.0, 0.0]
    assert CiderD().score(["a b", ""], [[""], ["a"]]).tolist() == [0.0, 0.0]


def test_index_strings_score_like_words():
    # the SCST reward scores vocabulary-index strings; ids are just words to CIDEr-D
    gts = {0: ["12 45 7 0", "12 45 9 3 0"], 1: ["8 8 2 0"]}
    res = {0: ["12 45 7 7 0"], 1: ["8 2 0"]}
    np.testing.assert_allclose(CiderD().compute_score(gts, res)[1], CocoCider().compute_score(gts, res)[1], atol=TOL)


def test_errors_are_clear():
    scorer = CiderD()
    with pytest.raises(KeyError, match="no references"):
        scorer.compute_score({1: ["a b"]}, [{"image_id": 2, "caption": ["a"]}])
    with pytest.raises(ValueError, match="list of one string"):
        scorer.compute_score({1: ["a b"]}, {1: "a b"})
    with pytest.raises(ValueError, match="list of one string"):
        scorer.compute_score({1: ["a b"]}, [{"image_id": 1, "caption": ["a", "b"]}])
    with pytest.raises(ValueError, match="non-empty list of strings"):
        scorer.compute_score({1: []}, {1: ["a"]})
    with pytest.raises(ValueError, match="image_id"):
        scorer.compute_score({1: ["a"]}, [{"id": 1, "caption": ["a"]}])
    with pytest.raises(ValueError, match="empty"):
        scorer.compute_score({1: ["a"]}, [])
    with pytest.raises(IndexError):
        scorer.score(["a"], [["a"]], [1])
    with pytest.raises(ValueError, match="ref_len"):
        CiderD(df={"document_frequency": {}})
    with pytest.raises(TypeError, match="tuples"):
        CiderD(df={"document_frequency": {"a b": 1}, "ref_len": 3})
