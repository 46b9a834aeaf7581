"""Feature extraction (scripts/*clip*_prepro_feats.py) on a handful of tiny images and a random tiny CLIP."""
import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import clip
from captioning.data.extract import BadImagesError, GridFeatures, ImageListError, extract, read_image_list, run, shard
from captioning.data.features import FeatureError, FolderFeatures, FolderWriter, PackedFeatures, PackedWriter
from clip.model import tiny_clip_config

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
SIZES = [(64, 64), (40, 30), (50, 70), (64, 48), (33, 33), (80, 60), (45, 45)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Seven PNGs of different sizes, a Karpathy file listing them, a saved tiny ResNet CLIP."""
    root = tmp_path_factory.mktemp("extract")
    rng = np.random.default_rng(0)
    images = []
    for k, (w, h) in enumerate(SIZES):
        (root / "imgs" / "sub").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "imgs" / "sub" / f"im{k}.png")
        images.append({"filepath": "sub", "filename": f"im{k}.png", "cocoid": 100 + k, "split": "train"})
    (root / "karpathy.json").write_text(json.dumps({"images": images}))
    torch.manual_seed(0)
    model = clip.CLIP(**tiny_clip_config("resnet")).eval()
    with torch.no_grad():  # move BatchNorm off its identity init so every layer matters
        for name, p in model.visual.named_parameters():
            if "bn" in name or "downsample.1" in name:
                p.add_(torch.rand_like(p) * 0.5)
    torch.save(model.state_dict(), root / "clip.pt")
    return root


def cli(world, out, *extra):
    return ["--input_json", str(world / "karpathy.json"), "--images_root", str(world / "imgs"),
            "--output_dir", str(out), "--clip_model", str(world / "clip.pt"), "--device", "cpu",
            "--batch_size", "3", "--num_workers", "0", "--num_threads", "1", "--quiet", *extra]


def by_hand(path, n_px, crop):
    """Preprocessing written out with PIL and numpy: square resize, or shorter side + centre crop."""
    image = Image.open(path).convert("RGB")
    if crop:
        w, h = image.size
        size = (n_px, int(n_px * h / w)) if w <= h else (int(n_px * w / h), n_px)
        image = image.resize(size, Image.BICUBIC)
        left, top = int(round((size[0] - n_px) / 2)), int(round((size[1] - n_px) / 2))
        image = image.crop((left, top, left + n_px, top + n_px))
    else:
        image = image.resize((n_px, n_px), Image.BICUBIC)
    x = (np.asarray(image, np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(x).permute(2, 0, 1)[None]


def test_image_lists(tmp_path):
    karpathy = {"images": [{"filepath": "a", "filename": "x.jpg", "cocoid": 7}]}
    labels = {"images": [{"file_path": "a/x.jpg", "id": 7, "split": "val"}]}
    fce = {"images": [{"file_path": "imgs/abc.jpg", "id": "abc"}, {"file_path": "imgs/d.png"}]}
    for name, obj in [("k", karpathy), ("l", labels), ("f", fce)]:
        (tmp_path / f"{name}.json").write_text(json.dumps(obj))
    (k,) = read_image_list(tmp_path / "k.json", "R")
    assert (k.id, str(k.path), k.position) == (7, "R/a/x.jpg", 0)
    (entry,) = read_image_list(tmp_path / "l.json", "R")
    assert (entry.id, str(entry.path)) == (7, "R/a/x.jpg")
    assert [(e.id, str(e.path)) for e in read_image_list(tmp_path / "f.json", "R", stem_ids=True)] == [
        ("abc", "R/imgs/abc.jpg"), ("d", "R/imgs/d.png")]
    with pytest.raises(ImageListError, match="no 'id'"):
        read_image_list(tmp_path / "f.json", "R")
    bad = {"images": [{"file_path": "imgs/abc.jpg", "id": "other"}]}
    (tmp_path / "b.json").write_text(json.dumps(bad))
    with pytest.raises(ImageListError, match="must be the file stem"):
        read_image_list(tmp_path / "b.json", "R", stem_ids=True)
    (tmp_path / "d.json").write_text(json.dumps({"images": labels["images"] * 2}))
    with pytest.raises(ImageListError, match="appears more than once"):
        read_image_list(tmp_path / "d.json", "R")
    (tmp_path / "u.json").write_text(json.dumps({"images": [{"path": "x"}]}))
    with pytest.raises(ImageListError, match="neither"):
        read_image_list(tmp_path / "u.json", "R")
    entries = list(range(7))
    assert shard(entries, 3, 1) == [1, 4]
    with pytest.raises(ValueError):
        shard(entries, 2, 2)


def test_grid_equals_direct_model_call(world, tmp_path):
    run(cli(world, tmp_path / "out", "--resolution", "96", "--fc"), "grid")
    model, _ = clip.load(world / "clip.pt")
    for k in range(len(SIZES)):
        with np.load(tmp_path / "out_clip_clip_att" / f"{100 + k}.npz") as z:
            assert z.files == ["feat"]
            att = z["feat"]
        assert att.shape == (3, 3, 512) and att.dtype == np.float32
        x = by_hand(world / "imgs" / "sub" / f"im{k}.png", 96, crop=False)
        with torch.no_grad():
            grid = model.visual_grid(x)[0].permute(1, 2, 0).numpy()
            pooled = model.encode_image(x)[0].numpy()
        np.testing.assert_allclose(att, grid, rtol=1e-4, atol=1e-5)
        fc = np.load(tmp_path / "out_clip_clip_fc" / f"{100 + k}.npy")
        assert fc.shape == (128,) and fc.dtype == np.float32 and np.ptp(fc) > 0  # not the original's constant fc
        np.testing.assert_allclose(fc, pooled, rtol=1e-4, atol=1e-5)
    manifest = json.loads((tmp_path / "out_clip_clip_att" / "manifest.json").read_text())
    assert manifest["count"] == 7 and manifest["shape"] == [3, 3, 512] and manifest["dtype"] == "float32"
    assert manifest["config"]["resolution"] == 96 and manifest["config"]["keep_aspect"] is False
    assert manifest["source_sha256"] == hashlib.sha256((world / "karpathy.json").read_bytes()).hexdigest()


def test_vit_grid_is_the_patch_tokens():
    torch.manual_seed(0)
    model = clip.CLIP(**tiny_clip_config("vit")).eval()
    x = torch.randn(2, 3, 96, 96)
    out = GridFeatures(model, fc=True)(x)
    with torch.no_grad():
        tokens = model.visual.forward_tokens(x)  # (2, 1 + 6*6, 64): CLS, then patches row by row
        pooled = model.encode_image(x)
    assert out["att"].shape == (2, 6, 6, 64) and out["fc"].shape == (2, 128)
    np.testing.assert_allclose(out["att"][1, 2, 5], tokens[1, 1 + 2 * 6 + 5].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["fc"], pooled.numpy(), rtol=1e-4, atol=1e-5)


def test_keep_aspect_crops(world, tmp_path):
    run(cli(world, tmp_path / "out", "--resolution", "64", "--keep_aspect", "--format", "packed"), "grid")
    model, _ = clip.load(world / "clip.pt")
    store = PackedFeatures(tmp_path / "out_clip_clip_att.npy")
    x = by_hand(world / "imgs" / "sub" / "im2.png", 64, crop=True)
    with torch.no_grad():
        np.testing.assert_allclose(store[102], model.visual_grid(x)[0].permute(1, 2, 0).numpy(), rtol=1e-4, atol=1e-5)


def test_packed_equals_files_and_workers(world, tmp_path):
    run(cli(world, tmp_path / "f", "--resolution", "64"), "grid")
    run(cli(world, tmp_path / "p", "--resolution", "64", "--format", "packed", "--num_workers", "2"), "grid")
    files, packed = FolderFeatures(tmp_path / "f_clip_clip_att"), PackedFeatures(tmp_path / "p_clip_clip_att.npy")
    assert packed.manifest["ids"] == [100 + k for k in range(7)] and packed.manifest["count"] == 7
    assert packed.array.shape == (7, 2, 2, 512) and packed.array.dtype == np.float32
    for k in range(7):
        np.testing.assert_array_equal(files[100 + k], packed[100 + k])


class Interrupt(Exception):
    pass


def interrupting(forward, after):
    calls = []

    def f(images):
        calls.append(len(images))
        if len(calls) > after:
            raise Interrupt
        return forward(images)
    return f, calls


@pytest.mark.parametrize("fmt", ["files", "packed"])
def test_resume_writes_only_missing_ids(world, tmp_path, fmt):
    model, _ = clip.load(world / "clip.pt")
    entries = read_image_list(world / "karpathy.json", world / "imgs")
    transform = clip.transforms.grid_preprocess(64)

    def writer(name):
        if fmt == "files":
            return FolderWriter(tmp_path / name, ".npz", {"m": 1})
        return PackedWriter(tmp_path / f"{name}.npy", {"m": 1}, part_bytes=1)  # one part per batch

    def ids_of(name):
        store = FolderFeatures(tmp_path / name) if fmt == "files" else PackedFeatures(tmp_path / f"{name}.npy")
        return {int(i) for i in (store.manifest["ids"] if fmt == "packed" else
                                 [p.stem for p in (tmp_path / name).glob("*.npz")])}, store

    extract(entries, transform, GridFeatures(model), {"att": writer("ref")}, batch_size=2, progress=False)
    f, _ = interrupting(GridFeatures(model), after=2)
    with pytest.raises(Interrupt):
        extract(entries, transform, f, {"att": writer("run")}, batch_size=2, progress=False)
    assert not list(tmp_path.rglob("*.tmp"))
    if fmt == "files":
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [f"{i}.npz" for i in range(100, 104)]
    else:
        assert not (tmp_path / "run.npy").exists() and len(list((tmp_path / "run.npy.parts").glob("*.npy"))) == 2
        (tmp_path / "run.npy.parts" / "part-000009.npy").write_bytes(b"killed before its index")
    seen = []

    def recording(images):
        seen.append(len(images))
        return GridFeatures(model)(images)
    report = extract(entries, transform, recording, {"att": writer("run")}, batch_size=2, progress=False)
    assert (report.already_done, report.written, sum(seen)) == (4, 3, 3)
    ref_ids, ref = ids_of("ref")
    run_ids, out = ids_of("run")
    assert run_ids == ref_ids == set(range(100, 107))
    for i in ref_ids:
        np.testing.assert_array_equal(out[i], ref[i])
    assert not (tmp_path / "run.npy.parts").exists()
    assert extract(entries, transform, recording, {"att": writer("run")}, progress=False).written == 0


def test_killed_file_write_leaves_nothing(world, tmp_path, monkeypatch):
    def dies(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise Interrupt
    with monkeypatch.context() as m:
        m.setattr(np, "savez_compressed", dies)
        writer = FolderWriter(tmp_path / "att", ".npz")
        with pytest.raises(Interrupt):
            writer.add([5], np.ones((1, 2, 2, 3), np.float32))
    assert list((tmp_path / "att").iterdir()) == []
    # a SIGKILL leaves atomic_path's hidden temporary file; it goes once its id is written
    for name in (".5.npz.x1y2.tmp", ".6.npz.a7b8.tmp"):
        (tmp_path / "att" / name).write_bytes(b"PK half")
    FolderWriter(tmp_path / "att", ".npz").add([5], np.ones((1, 2, 2, 3), np.float32))
    assert sorted(p.name for p in (tmp_path / "att").iterdir()) == [".6.npz.a7b8.tmp", "5.npz"]


def test_packed_writer_extends_a_store(tmp_path):
    rows = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)
    w = PackedWriter(tmp_path / "p.npy", {"m": 1}, part_bytes=1)
    for k in range(3):  # parts 0, 1, 2
        w.add([f"i{k}"], rows[k:k + 1], [k])
    for name in ("part-000001.json", "part-000001.npy"):  # a part lost: its id is missing again
        (tmp_path / "p.npy.parts" / name).unlink()
    w = PackedWriter(tmp_path / "p.npy", {"m": 1}, part_bytes=1)
    assert w.done == {"i0", "i2"}
    w.add(["i1"], rows[1:2], [1])
    assert (tmp_path / "p.npy.parts" / "part-000003.npy").is_file()  # numbered after the last, none overwritten
    w.finish(note="x")
    w = PackedWriter(tmp_path / "p.npy", {"m": 1})
    w.add(["i4", "i3"], rows[[4, 3]], [4, 3])
    w.finish()
    store = PackedFeatures(tmp_path / "p.npy")
    assert store.manifest["ids"] == ["i0", "i1", "i2", "i3", "i4"] and store.manifest["positions"] == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(np.asarray(store.array), rows)
    assert store.manifest["config"] == {"m": 1} and not (tmp_path / "p.npy.parts").exists()


def test_other_config_is_refused(tmp_path):
    FolderWriter(tmp_path / "a", ".npy", {"resolution": 448}).finish()
    with pytest.raises(FeatureError, match="another configuration"):
        FolderWriter(tmp_path / "a", ".npy", {"resolution": 128})
    w = PackedWriter(tmp_path / "p.npy", {"resolution": 448})
    w.add([1], np.ones((1, 2), np.float32), [0])
    w.flush()
    with pytest.raises(FeatureError, match="another configuration"):
        PackedWriter(tmp_path / "p.npy", {"resolution": 128})


def test_bad_images_are_listed_or_skipped(world, tmp_path):
    data = tmp_path / "imgs" / "sub"
    data.mkdir(parents=True)
    for k in range(len(SIZES)):
        (data / f"im{k}.png").write_bytes((world / "imgs" / "sub" / f"im{k}.png").read_bytes())
    (data / "im1.png").write_bytes(b"this is not a png")
    (data / "im3.png").write_bytes((world / "imgs" / "sub" / "im3.png").read_bytes()[:200])  # truncated
    (data / "im5.png").unlink()
    args = cli(world, tmp_path / "o", "--resolution", "64", "--format", "packed")
    args[args.index("--images_root") + 1] = str(tmp_path / "imgs")
    with pytest.raises(BadImagesError) as err:
        run(args, "grid")
    message = str(err.value)
    assert "3 of 7 image(s) could not be read" in message
    for i, why in [(101, "im1.png"), (103, "im3.png"), (105, "FileNotFoundError")]:
        assert f"id {i}: " in message and why in message
    assert not (tmp_path / "o_clip_clip_att.npy").exists()  # no store with silent holes
    report = run(args + ["--skip_bad"], "grid")
    assert [i for i, _ in report.skipped] == [101, 103, 105] and report.written == 0 and report.already_done == 4
    store = PackedFeatures(tmp_path / "o_clip_clip_att.npy")
    assert store.manifest["ids"] == [100, 102, 104, 106] and store.manifest["skipped"] == [101, 103, 105]


def test_clipscore_embeddings(world, tmp_path):
    run(cli(world, tmp_path / "o"), "clipscore")
    run(cli(world, tmp_path / "p", "--format", "packed"), "clipscore")
    model, _ = clip.load(world / "clip.pt")
    packed = PackedFeatures(tmp_path / "p_clipscore_vis.npy")
    for k in range(len(SIZES)):
        vis = np.load(tmp_path / "o_clipscore_vis" / f"{100 + k}.npy")
        assert vis.shape == (128,) and vis.dtype == np.float32
        assert abs(np.sqrt((vis.astype(np.float64) ** 2).sum()) - 1) < 1e-5
        with torch.no_grad():  # CLIP's own preprocessing at the model's resolution (64)
            ref = F.normalize(model.encode_image(by_hand(world / "imgs" / "sub" / f"im{k}.png", 64, crop=True)))
        np.testing.assert_allclose(vis, ref[0].numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(packed[100 + k], vis)


def test_shards_merge_equal_single_run(world, tmp_path):
    base = ["--resolution", "64", "--format", "packed", "--fc", "--batch_size", "1"]  # same batches: exact
    run(cli(world, tmp_path / "single", *base), "grid")
    merge = cli(world, tmp_path / "sh", *base, "--n_jobs", "3", "--merge")
    for j in (2, 0):
        run(cli(world, tmp_path / "sh", *base, "--n_jobs", "3", "--job_id", str(j)), "grid")
    with pytest.raises(FileNotFoundError, match="shard1of3"):
        run(merge, "grid")
    run(cli(world, tmp_path / "sh", *base, "--n_jobs", "3", "--job_id", "1"), "grid")
    run(merge, "grid")
    for feat in ("att", "fc"):
        single = PackedFeatures(tmp_path / f"single_clip_clip_{feat}.npy")
        merged = PackedFeatures(tmp_path / f"sh_clip_clip_{feat}.npy")
        assert merged.manifest["ids"] == single.manifest["ids"] == [100 + k for k in range(7)]
        np.testing.assert_array_equal(np.asarray(merged.array), np.asarray(single.array))
        assert merged.manifest["config"] == single.manifest["config"] and merged.manifest["count"] == 7
    for j in range(2):  # per-image shards share one folder
        run(cli(world, tmp_path / "fs", *base[:2], "--batch_size", "1", "--n_jobs", "2", "--job_id", str(j)), "grid")
    folder = FolderFeatures(tmp_path / "fs_clip_clip_att")
    single = PackedFeatures(tmp_path / "single_clip_clip_att.npy")
    for k in range(7):
        np.testing.assert_array_equal(folder[100 + k], single[100 + k])
    assert {p.name for p in (tmp_path / "fs_clip_clip_att").glob("manifest*")} == {
        "manifest-shard0of2.json", "manifest-shard1of2.json"}


def test_finecapeval_ids_are_stems(world, tmp_path):
    fce = {"images": [{"file_path": f"sub/im{k}.png", "id": f"im{k}"} for k in range(3)]}
    (tmp_path / "fce.json").write_text(json.dumps(fce))
    args = cli(world, tmp_path / "FineCapEval", "--resolution", "64", "--model_type", "RN")
    args[args.index("--input_json") + 1] = str(tmp_path / "fce.json")
    run(args, "grid", finecapeval=True)
    assert sorted(p.name for p in (tmp_path / "FineCapEval_clip_RN_att").glob("*.npz")) == [
        "im0.npz", "im1.npz", "im2.npz"]
    run(args[:-4], "clipscore", finecapeval=True)  # without --resolution and --model_type
    assert sorted(p.name for p in (tmp_path / "FineCapEval_clipscore_vis").glob("*.npy")) == [
        "im0.npy", "im1.npy", "im2.npy"]
    fce["images"][1]["id"] = "x"
    (tmp_path / "fce.json").write_text(json.dumps(fce))
    with pytest.raises(ImageListError, match="file stem"):
        run(args, "grid", finecapeval=True)
