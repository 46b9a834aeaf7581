import json

import pytest

from captioning.metrics.finecapeval import (
    load_finecapeval,
    process_text,
    score_finecapeval,
    split_phrases,
    tokenize,
    write_finecapeval_json,
)

# Rows 2 and 4 have an empty field and are skipped; img3 therefore disappears.
CSV = (
    "image,caption,background,object,relation\n"
    'img1.jpg,"A dog, on grass.",green grass\\;a park,a brown dog\\;grass,dog lying on grass\n'
    "img1.jpg,A dog.,sunny day,the dog,\n"
    "img2.png,Cats in a kitchen., a kitchen\\;x\\; y,two happy cats\\;a,cats sitting near window\\;--\n"
    "img3.jpg,,sky,bird,bird in sky\n"
)
PREDICTIONS = {"img1": "a dog lying on the grass", "img2": "cats in the room"}


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "FineCapEval.csv"
    path.write_text(CSV)
    return load_finecapeval(path)


def test_loading_skips_incomplete_rows_and_processes_phrases(data):
    assert (data.n_rows, data.n_skipped) == (4, 2)
    assert data.captions == {"img1": ["A dog, on grass."], "img2": ["Cats in a kitchen."]}
    # "x" is dropped (length 1) but " y" is kept (length 2 before any stripping)
    assert data.phrases["background"] == {"img1": ["green grass", "a park"], "img2": ["a kitchen", "y"]}
    assert data.phrases["object"] == {"img1": ["a brown dog", "grass"], "img2": ["two happi cat"]}  # "a" dropped
    # "--" is longer than 1 but has no alphanumerics: it stays as a phrase without words
    assert data.phrases["relation"] == {"img1": ["dog lie on grass"], "img2": ["cat sit near window", ""]}


def test_scores_worked_out_by_hand(data):
    out = score_finecapeval(data, PREDICTIONS)
    # substring rule; img1 = "a dog lying on the grass", img2 = "cats in the room"
    # background: img1 (1/2 + 1/2)/2; img2 "a kitchen": "a" is inside "cats" -> 1/2, "y" -> 0
    assert out["background"] == pytest.approx(100 * (1 / 2 + 1 / 4) / 2)
    # object: img1 (2/3 + 1)/2, img2 "two happi cat" -> 1/3
    assert out["object"] == pytest.approx(100 * (5 / 6 + 1 / 3) / 2)
    # relation: img1 "lie" is not a substring of "lying" -> 3/4; img2 (1/4 + 0)/2
    assert out["relation"] == pytest.approx(100 * (3 / 4 + 1 / 8) / 2)
    assert out["overall"] == pytest.approx((37.5 + 100 * (7 / 6) / 2 + 43.75) / 3)
    # token rule: img2 has no word "a"; img1's "lying" stems to "lie"
    assert out["background_token"] == pytest.approx(100 * (1 / 2 + 0) / 2)
    assert out["object_token"] == pytest.approx(out["object"])
    assert out["relation_token"] == pytest.approx(100 * (1 + 1 / 8) / 2)
    assert out["overall_token"] == pytest.approx((25.0 + 100 * (7 / 6) / 2 + 56.25) / 3)
    assert out["n_images"] == 2


def test_tokenizer_matches_word_tokenize_conventions():
    assert tokenize("a man's hat.") == ["a", "man", "'s", "hat", "."]
    assert tokenize("two dogs. a cat") == ["two", "dogs", ".", "a", "cat"]  # punkt ends a sentence there
    assert tokenize("st. mary church") == ["st.", "mary", "church"]  # abbreviation kept
    assert process_text("two dogs. a cat") == "two dog  a cat"
    assert process_text("happy children") == "happi children"
    assert split_phrases("A Red Hat\\;b\\;Blue sky") == ["a red hat", "blue sky"]


def test_errors_and_json(tmp_path, data):
    with pytest.raises(ValueError, match="img2"):
        score_finecapeval(data, {"img1": "a dog"})
    bad = tmp_path / "bad.csv"
    bad.write_text("image,caption,background\nimg1.jpg,a,b\n")
    with pytest.raises(ValueError, match="missing column"):
        load_finecapeval(bad)
    out = score_finecapeval(data, PREDICTIONS)
    path = write_finecapeval_json(out, tmp_path / "results" / "fce.json")
    assert json.loads(path.read_text()) == pytest.approx(out)
