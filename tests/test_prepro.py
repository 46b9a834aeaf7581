"""prepro_labels / prepro_ngrams on a hand-written Karpathy JSON with hand-worked expectations."""
import json
import pickle

import h5py
import numpy as np
import pytest

from captioning.data.prepro import DataError, prepro_labels, prepro_ngrams


def sent(*tokens):
    return {"tokens": list(tokens), "raw": " ".join(tokens)}


IMAGES = [
    {"split": "train", "filepath": "train2014", "filename": "A.jpg", "cocoid": 10, "imgid": 0,
     "sentences": [sent("a", "red", "circle"), sent("a", "circle")]},
    {"split": "restval", "filepath": "val2014", "filename": "B.jpg", "cocoid": 20, "imgid": 1,
     "sentences": [sent("a", "blue", "square"), sent("the", "square")]},
    {"split": "val", "filepath": "val2014", "filename": "C.jpg", "cocoid": 30, "imgid": 2,
     "sentences": [sent("a", "red", "square"), sent("square")]},
]
# Counts over all splits, in first-occurrence order: a 4, red 2, circle 2, blue 1, square 4, the 1.
# Threshold 1 keeps count > 1: a, red, circle, square; blue and the become UNK (appended last).
EXPECTED_VOCAB = {"1": "a", "2": "red", "3": "circle", "4": "square", "5": "UNK"}


@pytest.fixture()
def karpathy(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"images": IMAGES}))
    return path


def test_prepro_labels_hand_worked(karpathy, tmp_path):
    out_json, out_h5 = tmp_path / "talk.json", tmp_path / "talk"
    prepro_labels(karpathy, out_json, out_h5, max_length=2, word_count_threshold=1)
    info = json.loads(out_json.read_text())
    assert info["ix_to_word"] == EXPECTED_VOCAB
    assert info["images"] == [
        {"split": "train", "file_path": "train2014/A.jpg", "id": 10},
        {"split": "restval", "file_path": "val2014/B.jpg", "id": 20},
        {"split": "val", "file_path": "val2014/C.jpg", "id": 30},
    ]
    with h5py.File(tmp_path / "talk_label.h5") as f:
        assert all(f[k].dtype == np.uint32 for k in f)
        # truncated to 2 tokens, zero padded, unknown words -> 5
        np.testing.assert_array_equal(f["labels"][:], [[1, 2], [1, 3], [1, 5], [5, 4], [1, 2], [4, 0]])
        np.testing.assert_array_equal(f["label_start_ix"][:], [1, 3, 5])   # 1-based, inclusive
        np.testing.assert_array_equal(f["label_end_ix"][:], [2, 4, 6])
        np.testing.assert_array_equal(f["label_length"][:], [2, 2, 2, 2, 2, 1])


def test_prepro_labels_no_unk_when_nothing_dropped(karpathy, tmp_path):
    prepro_labels(karpathy, tmp_path / "t.json", tmp_path / "t", max_length=16, word_count_threshold=0)
    vocab = json.loads((tmp_path / "t.json").read_text())["ix_to_word"]
    assert list(vocab.values()) == ["a", "red", "circle", "blue", "square", "the"]
    with h5py.File(tmp_path / "t_label.h5") as f:
        assert f["labels"].shape == (6, 16)
        np.testing.assert_array_equal(f["labels"][0, :4], [1, 2, 3, 0])


WORD_DF = {
    # image A refs: "a red circle <eos>", "a circle <eos>"; image B (restval): "a UNK square <eos>", "UNK square <eos>"
    ("a",): 2, ("red",): 1, ("circle",): 1, ("<eos>",): 2, ("UNK",): 1, ("square",): 1,
    ("a", "red"): 1, ("red", "circle"): 1, ("circle", "<eos>"): 1, ("a", "circle"): 1,
    ("a", "UNK"): 1, ("UNK", "square"): 1, ("square", "<eos>"): 1,
    ("a", "red", "circle"): 1, ("red", "circle", "<eos>"): 1, ("a", "circle", "<eos>"): 1,
    ("a", "UNK", "square"): 1, ("UNK", "square", "<eos>"): 1,
    ("a", "red", "circle", "<eos>"): 1, ("a", "UNK", "square", "<eos>"): 1,
}
WORD_TO_IDX = {"a": "1", "red": "2", "circle": "3", "square": "4", "UNK": "5", "<eos>": "0"}


def test_prepro_ngrams_hand_worked(karpathy, tmp_path):
    # max_length 2 for the labels must not truncate the n-gram references
    prepro_labels(karpathy, tmp_path / "t.json", tmp_path / "t", max_length=2, word_count_threshold=1)
    n = prepro_ngrams(karpathy, tmp_path / "t.json", str(tmp_path / "ng"), "train")
    assert n == 2  # train + restval
    words = pickle.loads((tmp_path / "ng-words.p").read_bytes())
    idxs = pickle.loads((tmp_path / "ng-idxs.p").read_bytes())
    assert {k: words[k] for k in ("document_frequency", "ref_len")} == {"document_frequency": WORD_DF, "ref_len": 2}
    assert words["kind"] == "words" and idxs["kind"] == "idxs" and words["vocab_fingerprint"] == idxs["vocab_fingerprint"]
    expected_idx = {tuple(WORD_TO_IDX[w] for w in k): v for k, v in WORD_DF.items()}
    assert {k: idxs[k] for k in ("document_frequency", "ref_len")} == {"document_frequency": expected_idx, "ref_len": 2}
    assert all(isinstance(v, float) for v in words["document_frequency"].values())  # as the original's pickles


def test_prepro_ngrams_split_selection(karpathy, tmp_path):
    prepro_labels(karpathy, tmp_path / "t.json", tmp_path / "t", word_count_threshold=1)
    assert prepro_ngrams(karpathy, tmp_path / "t.json", str(tmp_path / "v"), "val") == 1
    assert prepro_ngrams(karpathy, tmp_path / "t.json", str(tmp_path / "a"), "all") == 3
    with pytest.raises(DataError, match="no image belongs to split 'test'"):
        prepro_ngrams(karpathy, tmp_path / "t.json", str(tmp_path / "x"), "test")


@pytest.mark.parametrize("mutate,match", [
    (lambda im: im[0].pop("split"), r"image #0 \(A.jpg\) lacks field\(s\) split"),
    (lambda im: im[1].update(sentences=[]), r"image #1 \(id 20, B.jpg\) has no captions"),
    (lambda im: im[2]["sentences"].append(sent()), r"image #2 \(id 30\) caption #2 is empty"),
    (lambda im: [im[0].pop("cocoid"), im[0].pop("imgid")], r"cocoid \(or imgid\)"),
])
def test_bad_input_is_a_clear_error(tmp_path, mutate, match):
    images = json.loads(json.dumps(IMAGES))
    mutate(images)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"images": images}))
    with pytest.raises(DataError, match=match):
        prepro_labels(path, tmp_path / "o.json", tmp_path / "o")
    assert not (tmp_path / "o.json").exists() and not (tmp_path / "o_label.h5").exists()


def test_missing_input_file(tmp_path):
    with pytest.raises(DataError, match="input JSON not found"):
        prepro_labels(tmp_path / "nope.json", tmp_path / "o.json", tmp_path / "o")
