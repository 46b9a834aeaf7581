"""The original's per-image feature folders (<cocoid>.npz key 'feat' (14, 14, C); <cocoid>.npy vectors) are read
directly and packed by scripts/pack_features.py into a store that returns exactly the files' arrays."""
import json
import runpy
from pathlib import Path

import numpy as np
import pytest

from captioning.data.features import FolderFeatures, open_features

PACK = runpy.run_path(str(Path(__file__).resolve().parents[1] / "scripts" / "pack_features.py"))["main"]
IDS = [391895, 522418, 184613, 318219, 554625]


@pytest.fixture()
def folders(tmp_path):
    rng = np.random.default_rng(0)
    att, vis = tmp_path / "cocotalk_clip_RN50_att", tmp_path / "cocotalk_clipscore_vis"
    att.mkdir()
    vis.mkdir()
    for i in IDS:
        np.savez_compressed(att / f"{i}.npz", feat=rng.standard_normal((14, 14, 8)).astype(np.float32))
        v = rng.standard_normal(6).astype(np.float32)
        np.save(vis / f"{i}.npy", v / np.linalg.norm(v))
    return att, vis


def file_array(folder, image_id):
    path = folder / f"{image_id}.npz"
    if path.exists():
        with np.load(path) as z:
            return z["feat"]
    return np.load(folder / f"{image_id}.npy")


def test_folder_reads_the_original_files(folders):
    att, vis = folders
    store = FolderFeatures(att)
    assert store[IDS[0]].shape == (14, 14, 8)
    np.testing.assert_array_equal(store[IDS[2]], file_array(att, IDS[2]))
    np.testing.assert_array_equal(FolderFeatures(vis)[str(IDS[1])], file_array(vis, IDS[1]))


def test_pack_folder_in_numeric_id_order(folders, tmp_path):
    att, _ = folders
    assert PACK(["--input_dir", str(att), "--output", str(tmp_path / "att.npy")]) == 0
    packed = open_features(tmp_path / "att.npy")
    assert [str(i) for i in packed.manifest["ids"]] == [str(i) for i in sorted(IDS)]
    for i in IDS:
        np.testing.assert_array_equal(packed[i], file_array(att, i))
    assert np.load(tmp_path / "att.npy").shape == (len(IDS), 14, 14, 8)
    assert not (tmp_path / "att.npy.parts").exists()


def test_pack_ids_from_json_and_float16(folders, tmp_path):
    _, vis = folders
    order = [IDS[3], IDS[0], IDS[4]]
    (tmp_path / "cocotalk.json").write_text(json.dumps({"images": [{"id": i} for i in order]}))
    assert PACK(["--input_dir", str(vis), "--output", str(tmp_path / "vis.npy"), "--input_json",
                 str(tmp_path / "cocotalk.json"), "--dtype", "float16"]) == 0
    packed = open_features(tmp_path / "vis.npy")
    assert [str(i) for i in packed.manifest["ids"]] == [str(i) for i in order]
    for i in order:
        assert packed[i].dtype == np.float16
        np.testing.assert_array_equal(packed[i], file_array(vis, i).astype(np.float16))


def test_missing_ids_and_existing_output_are_errors(folders, tmp_path, capsys):
    att, _ = folders
    (tmp_path / "c.json").write_text(json.dumps({"images": [{"id": IDS[0]}, {"id": 42}]}))
    out = tmp_path / "att.npy"
    assert PACK(["--input_dir", str(att), "--output", str(out), "--input_json", str(tmp_path / "c.json")]) == 2
    assert "1 of 2 ids have no file" in capsys.readouterr().err
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert PACK(["--input_dir", str(att), "--output", str(out)]) == 0
    assert PACK(["--input_dir", str(att), "--output", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert PACK(["--input_dir", str(att), "--output", str(tmp_path / "att.h5")]) == 2
