"""Caption data set, collate and feature stores on a tiny hand-made data set."""
import json

import numpy as np
import pytest
import torch

from captioning.data.dataset import CaptionDataset, DataPaths, DatasetError, collate
from captioning.data.features import FeatureError, FolderFeatures, PackedFeatures, open_features, write_packed
from captioning.data.prepro import prepro_labels


def sent(*t):
    return {"tokens": list(t), "raw": " ".join(t)}


@pytest.fixture()
def tiny(tmp_path):
    images = [
        {"split": "train", "filepath": "x", "filename": "a.png", "cocoid": 5,
         "sentences": [sent("a", "b"), sent("b"), sent("a", "b", "c"), sent("c", "a"), sent("b", "b"), sent("c")]},
        {"split": "restval", "filepath": "x", "filename": "b.png", "cocoid": 6, "sentences": [sent("c", "c", "a")]},
        {"split": "val", "filepath": "x", "filename": "c.png", "cocoid": 7, "sentences": [sent("a"), sent("b", "a")]},
    ]
    (tmp_path / "k.json").write_text(json.dumps({"images": images}))
    prepro_labels(tmp_path / "k.json", tmp_path / "talk.json", tmp_path / "talk", word_count_threshold=0)
    feats = {5: np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3), 6: np.ones((2, 2, 3), np.float32),
             7: -np.ones((2, 2, 3), np.float32)}
    (tmp_path / "att").mkdir()
    for i, f in feats.items():
        np.savez_compressed(tmp_path / "att" / f"{i}.npz", feat=f)
    (tmp_path / "vis").mkdir()
    for i in feats:
        np.save(tmp_path / "vis" / f"{i}.npy", np.full(4, float(i), np.float32))
    return tmp_path, feats


def test_items_and_collate(tiny):
    root, feats = tiny
    ds = CaptionDataset(DataPaths(str(root / "talk.json"), str(root / "talk_label.h5"), str(root / "att"),
                                  str(root / "vis")), seq_per_img=5, use_clipscore=True)
    assert ds.split_ix == {"train": [0, 1], "val": [2], "test": []}   # restval counts as train
    assert ds.ix_to_word == {"1": "a", "2": "b", "3": "c"}
    batch = collate([ds[0], ds[1]])
    assert batch["att_feats"].shape == (2, 4, 3) and batch["att_masks"] is None
    torch.testing.assert_close(batch["att_feats"][0], torch.from_numpy(feats[5].reshape(4, 3)))  # row-major (row, col)
    assert batch["fc_feats"].shape == (2, 0)
    assert batch["labels"].shape == (2, 5, 16 + 2)
    assert (batch["labels"][:, :, 0] == 0).all() and (batch["labels"][:, :, -1] == 0).all()
    all_rows = [[1, 2], [2], [1, 2, 3], [3, 1], [2, 2], [3]]
    got = [[t for t in r[1:-1].tolist() if t] for r in batch["labels"][0]]
    # image 0 has 6 captions: a contiguous window of 5 starting at offset 0 or 1
    assert got in (all_rows[0:5], all_rows[1:6])
    # masks: BOS + words + one EOS
    for s in range(5):
        n = len(got[s])
        assert batch["masks"][0, s].tolist() == [1.0] * (n + 2) + [0.0] * (18 - n - 2)
    # image 1 has one caption: 5 draws with replacement
    assert all(r[1:4].tolist() == [3, 3, 1] for r in batch["labels"][1])
    assert [g.shape for g in batch["gts"]] == [(6, 16), (1, 16)]
    assert batch["clip_vis_feats"][:, 0].tolist() == [5.0, 6.0]
    assert [i["id"] for i in batch["infos"]] == [5, 6]


def test_window_offsets_cover_all_starts(tiny):
    root, _ = tiny
    ds = CaptionDataset(DataPaths(str(root / "talk.json"), str(root / "talk_label.h5"), str(root / "att")))
    firsts = {tuple(ds.captions(0, np.random.default_rng(k))[0][0][:3]) for k in range(50)}
    assert firsts == {(1, 2, 0), (2, 0, 0)}


def test_items_are_a_function_of_seed_epoch_and_index(tiny):
    root, _ = tiny
    paths = DataPaths(str(root / "talk.json"), str(root / "talk_label.h5"), str(root / "att"))
    a, b = CaptionDataset(paths, seed=3), CaptionDataset(paths, seed=3)
    windows = {tuple(a[(0, epoch)]["seq"][0][:3]) for epoch in range(40)}
    assert windows == {(1, 2, 0), (2, 0, 0)}                     # the epoch changes the draw
    assert all(np.array_equal(a[(0, e)]["seq"], b[(0, e)]["seq"]) for e in range(40))   # nothing else does


def test_uneven_feature_lengths_give_masks():
    items = [{"att_feats": np.ones((n, 2), np.float32), "seq": np.zeros((1, 3), np.int64),
              "gts": np.zeros((1, 3), np.int64), "info": {}} for n in (2, 3)]
    b = collate(items)
    assert b["att_masks"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert b["att_feats"][0, 2].abs().sum() == 0


def test_no_labels_for_inference(tiny):
    root, _ = tiny
    ds = CaptionDataset(DataPaths(str(root / "talk.json"), None, str(root / "att")))
    item = ds[2]
    assert item["seq"].shape == (5, 1) and item["seq"].sum() == 0 and item["gts"].shape == (0, 1)


def test_missing_features_are_listed(tiny):
    root, _ = tiny
    (root / "att" / "6.npz").unlink()
    ds = CaptionDataset(DataPaths(str(root / "talk.json"), str(root / "talk_label.h5"), str(root / "att")))
    with pytest.raises(DatasetError, match=r"1 image\(s\) have no features .* ids \[6\]"):
        ds.check_features(ds.split_ix["train"])
    with pytest.raises(FeatureError, match="no features for image 6"):
        ds[1]


def test_label_json_mismatch(tiny, tmp_path):
    root, _ = tiny
    info = json.loads((root / "talk.json").read_text())
    info["images"] = info["images"][:2]
    (tmp_path / "short.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match="same prepro_labels run"):
        CaptionDataset(DataPaths(str(tmp_path / "short.json"), str(root / "talk_label.h5"), str(root / "att")))


def test_packed_store_equals_folder(tiny, tmp_path):
    root, feats = tiny
    folder = FolderFeatures(root / "att")
    ids = [5, 6, 7]
    write_packed(tmp_path / "att.npy", ids, np.stack([folder[i] for i in ids]), model="test")
    packed = open_features(tmp_path / "att.npy")
    assert isinstance(packed, PackedFeatures) and packed.manifest["model"] == "test"
    for i in ids:
        np.testing.assert_array_equal(packed[i], feats[i])
        assert i in packed
    assert 8 not in packed
    with pytest.raises(FeatureError, match="no features for image 8"):
        packed[8]
    with pytest.raises(ValueError, match="duplicate ids"):
        write_packed(tmp_path / "d.npy", [1, 1], np.zeros((2, 3)))


def test_corrupt_feature_file(tiny):
    root, _ = tiny
    (root / "att" / "5.npz").write_bytes(b"not a zip")
    with pytest.raises(FeatureError, match="unreadable feature file"):
        FolderFeatures(root / "att")[5]
