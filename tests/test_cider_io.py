"""Index-string helpers and the df pickle."""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from pycocoevalcap.cider.cider import Cider as CocoCider

from captioning.utils.io import write_pickle
from cider import CiderD, document_frequency, index_strings, load_df


def test_index_strings_stop_after_the_first_zero():
    seq = np.array([[12, 45, 7, 0, 0, 9], [3, 0, 5, 5, 0, 0], [0, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6]])
    assert index_strings(seq) == ["12 45 7 0", "3 0", "0", "1 2 3 4 5 6"]
    assert index_strings(torch.tensor(seq)) == ["12 45 7 0", "3 0", "0", "1 2 3 4 5 6"]


def test_index_strings_of_label_rows():
    # (n, 16) uint32 label rows: the words, then "0"; a 16-word row has no 0 and gets none,
    # like the original's array_to_str on h5 label rows
    labels = np.zeros((2, 16), dtype=np.uint32)
    labels[0, :3] = [5, 17, 2]
    labels[1, :] = np.arange(1, 17)
    assert index_strings(labels) == ["5 17 2 0", " ".join(str(i) for i in range(1, 17))]


def test_index_strings_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D integer"):
        index_strings(np.zeros(5, dtype=np.int64))
    with pytest.raises(ValueError, match="2-D integer"):
        index_strings(np.zeros((2, 3)))


def save_df(path, document_frequency, ref_len):
    """A df pickle as scripts/prepro_ngrams.py writes it (protocol 2, atomically)."""
    write_pickle(path, {"document_frequency": dict(document_frequency), "ref_len": ref_len}, protocol=2)


def test_save_and_load_df_round_trip_protocol_2(tmp_path):
    refs = {0: ["a b c", "a b"], 1: ["b c d"], 2: ["a a"]}
    df, n_images = document_frequency(refs.values())
    path = tmp_path / "sub" / "coco-train-idxs.p"
    save_df(path, df, n_images)
    raw = path.read_bytes()
    assert raw[:2] == b"\x80\x02"  # pickle protocol 2
    assert pickle.loads(raw) == {"document_frequency": df, "ref_len": 3}
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    loaded_df, ref_len = load_df(path)
    assert loaded_df == df and ref_len == 3
    assert df[("a",)] == 2 and df[("b", "c")] == 2 and df[("a", "a")] == 1


def test_df_file_of_the_scored_refs_reproduces_corpus_mode(tmp_path):
    # with one candidate per image, a df file built from the same references is coco-caption's corpus mode
    gts = {
        0: ["a man riding a horse", "a person on a horse"],
        1: ["a dog on a beach", "a dog running on the sand", "a brown dog"],
        2: ["a plate of food", "food on a white plate"],
    }
    res = {0: ["a man on a horse"], 1: ["a dog on the sand"], 2: ["a white plate"]}
    path = tmp_path / "df.p"
    save_df(path, *document_frequency(gts.values()))
    _, scores = CiderD(df=str(path)).compute_score(gts, res)
    np.testing.assert_allclose(scores, CocoCider().compute_score(gts, res)[1], rtol=0, atol=1e-9)
    assert CiderD(df=path).log_ref_len == pytest.approx(math.log(3))


def test_load_df_rejects_other_pickles(tmp_path):
    path = tmp_path / "bad.p"
    path.write_bytes(pickle.dumps({"document_frequency": {}}))
    with pytest.raises(ValueError, match="ref_len"):
        load_df(path)
