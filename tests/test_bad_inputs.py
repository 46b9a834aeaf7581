"""The bad-input matrix (docs/RELIABILITY.md): every entry point x mistake ends with exit status 2,
exactly one ``error:`` line on stderr, no traceback, and no partial output.

Each row calls the entry point's ``main(argv)`` in-process; ``{name}`` in an argument is replaced
by a path of the shared environment (see :func:`env`). ``outputs`` are paths that must not exist
afterwards (``save`` and ``eval_results`` must hold no file).
"""
from __future__ import annotations

import errno
import json
import runpy
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

import clip
from captioning.config import Config
from captioning.data.prepro import prepro_labels, prepro_ngrams
from captioning.models.configured import build_captioner

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "RELIABILITY.md"


@dataclass(frozen=True)
class Row:
    id: str
    tool: str                       # script path relative to the repository root
    argv: tuple[str, ...]
    outputs: tuple[str, ...] = ()   # must not exist afterwards
    patch: tuple[str, str] | None = None  # (module, attribute) replaced by a function raising ENOSPC
    needs_no_cuda: bool = False
    match: str = ""                 # a word the error line must contain
    extra: dict = field(default_factory=dict)


TRAIN = "tools/train_pl.py"
T = ("--cfg", "{cfg}", "--id", "x", "--checkpoint_path", "{out}/save")
CAPTION = "tools/caption.py"
GRID = "scripts/clip_prepro_feats.py"
G = ("--input_json", "{talk_json}", "--images_root", "{images_root}", "--clip_model", "{clip}", "--num_workers", "0",
     "--quiet", "--output_dir", "{out}/feats")

ROWS = [
    # ---- tools/train_pl.py: config
    Row("config missing", TRAIN, ("--cfg", "{out}/nope.yml", "--id", "x"), match="not found"),
    Row("config binary", TRAIN, ("--cfg", "{binary}", "--id", "x"), match="UTF-8"),
    Row("config truncated", TRAIN, ("--cfg", "{truncated_yml}", "--id", "x"), match="invalid YAML"),
    Row("config is a folder", TRAIN, ("--cfg", "{out}", "--id", "x"), match="not found"),
    Row("unknown key", TRAIN, (*T, "--batch_sise", "3"), match="batch_size"),
    Row("wrong type", TRAIN, (*T, "--batch_size", "lots"), match="batch_size"),
    Row("batch_size 0", TRAIN, (*T, "--batch_size", "0"), match="batch_size"),
    Row("seq_per_img 0", TRAIN, (*T, "--seq_per_img", "0"), match="seq_per_img"),
    Row("noamopt_warmup 0", TRAIN, (*T, "--noamopt_warmup", "0"), match="noamopt_warmup"),
    Row("d_model not divisible by heads", TRAIN, (*T, "--d_model", "130", "--num_att_heads", "4"), match="divisible"),
    Row("beam_size 0", TRAIN, (*T, "--beam_size", "0"), match="beam_size"),
    Row("beam_size -2", TRAIN, (*T, "--beam_size", "-2"), match="beam_size"),
    Row("max_length 0", TRAIN, (*T, "--max_length", "0"), match="max_length"),
    Row("dropout 1.5", TRAIN, (*T, "--dropout", "1.5"), match="dropout"),
    Row("temperature 0", TRAIN, (*T, "--temperature", "0"), match="temperature"),
    Row("precision 64", TRAIN, (*T, "--precision", "64"), match="precision"),
    Row("odd --set_cfgs", TRAIN, (*T, "--set_cfgs", "batch_size"), match="set_cfgs"),
    Row("stray argument", TRAIN, (*T, "extra"), match="extra"),
    Row("no --id", TRAIN, ("--cfg", "{cfg}"), match="--id"),
    # ---- tools/train_pl.py: data
    Row("input_json is a folder", TRAIN, (*T, "--input_json", "{out}"), match="Is a directory"),
    Row("input_json truncated", TRAIN, (*T, "--input_json", "{truncated_json}"), match="JSON"),
    Row("label h5 empty", TRAIN, (*T, "--input_label_h5", "{empty}"), match="label file"),
    Row("label h5 truncated", TRAIN, (*T, "--input_label_h5", "{truncated_h5}"), match="label file"),
    Row("labels of another vocabulary", TRAIN, (*T, "--input_label_h5", "{other_h5}"), match="another vocabulary"),
    Row("old labels beyond the vocabulary", TRAIN, (*T, "--input_label_h5", "{old_big_h5}"), match="index"),
    Row("features truncated .npy", TRAIN, (*T, "--input_att_dir", "{truncated_npy}"), match="truncated"),
    Row("features .json truncated", TRAIN, (*T, "--input_att_dir", "{bad_index_npy}"), match="JSON"),
    Row("features missing", TRAIN, (*T, "--input_att_dir", "{out}/none.npy"), match="input_att_dir"),
    Row("input_ref_json missing", TRAIN, (*T, "--language_eval", "1", "--input_ref_json", "{out}/refs.json"),
        match="input_ref_json"),
    Row("init_from truncated", TRAIN, (*T, "--init_from", "{truncated_ckpt}"), match="truncated"),
    Row("resume truncated", TRAIN, (*T, "--resume", "{truncated_ckpt}"), match="truncated"),
    Row("init_from missing", TRAIN, (*T, "--init_from", "{out}/none.ckpt"), match="not found"),
    Row("cached_tokens corrupt", TRAIN, (*T, "--self_critical_after", "0", "--init_from", "{ckpt}",
                                         "--cached_tokens", "{corrupt_p}"), match="pickle"),
    Row("cached_tokens words", TRAIN, (*T, "--self_critical_after", "0", "--init_from", "{ckpt}",
                                       "--cached_tokens", "{ng}-words.p"), match="word"),
    Row("cached_tokens other vocabulary", TRAIN, (*T, "--self_critical_after", "0", "--init_from",
                                                  "{ckpt}", "--cached_tokens", "{other_ng}-idxs.p"),
        match="another vocabulary"),
    Row("cached_tokens missing", TRAIN, (*T, "--self_critical_after", "0", "--init_from", "{ckpt}",
                                         "--cached_tokens", "{out}/none.p"), match="not found"),
    Row("checkpoint folder unwritable", TRAIN, ("--cfg", "{cfg}", "--id", "x", "--checkpoint_path", "{a_file}/save"),
        match="cannot write"),
    # ---- scripts/prepro_labels.py
    Row("prepro_labels input missing", "scripts/prepro_labels.py",
        ("--input_json", "{out}/none.json", "--output_json", "{out}/t.json", "--output_h5", "{out}/t"),
        ("t.json", "t_label.h5"), match="not found"),
    Row("prepro_labels input truncated", "scripts/prepro_labels.py",
        ("--input_json", "{truncated_json}", "--output_json", "{out}/t.json", "--output_h5", "{out}/t"),
        ("t.json", "t_label.h5"), match="JSON"),
    Row("prepro_labels max_length 0", "scripts/prepro_labels.py",
        ("--input_json", "{dataset}", "--output_json", "{out}/t.json", "--output_h5", "{out}/t", "--max_length", "0"),
        ("t.json", "t_label.h5"), match="max_length"),
    Row("prepro_labels threshold -1", "scripts/prepro_labels.py",
        ("--input_json", "{dataset}", "--output_json", "{out}/t.json", "--output_h5", "{out}/t",
         "--word_count_threshold", "-1"), ("t.json", "t_label.h5"), match="word_count_threshold"),
    Row("prepro_labels output unwritable", "scripts/prepro_labels.py",
        ("--input_json", "{dataset}", "--output_json", "{a_file}/t.json", "--output_h5", "{out}/t"),
        ("t_label.h5",), match="a_file"),
    Row("prepro_labels disk full", "scripts/prepro_labels.py",
        ("--input_json", "{dataset}", "--output_json", "{out}/t.json", "--output_h5", "{out}/t"),
        ("t.json",), patch=("captioning.data.prepro", "write_json"), match="no space"),
    Row("prepro_labels unknown option", "scripts/prepro_labels.py", ("--input_json", "x", "--bogus"), match="--bogus"),
    # ---- scripts/prepro_ngrams.py
    Row("prepro_ngrams vocabulary of another run", "scripts/prepro_ngrams.py",
        ("--input_json", "{dataset}", "--dict_json", "{other_json}", "--output_pkl", "{out}/ng"),
        ("ng-words.p", "ng-idxs.p"), match="vocabulary"),
    Row("prepro_ngrams old foreign vocabulary", "scripts/prepro_ngrams.py",
        ("--input_json", "{dataset}", "--dict_json", "{old_other_json}", "--output_pkl", "{out}/ng"),
        ("ng-words.p", "ng-idxs.p"), match="never occur"),
    Row("prepro_ngrams dict missing", "scripts/prepro_ngrams.py",
        ("--input_json", "{dataset}", "--dict_json", "{out}/none.json", "--output_pkl", "{out}/ng"),
        ("ng-words.p", "ng-idxs.p"), match="none.json"),
    Row("prepro_ngrams dict truncated", "scripts/prepro_ngrams.py",
        ("--input_json", "{dataset}", "--dict_json", "{truncated_json}", "--output_pkl", "{out}/ng"),
        ("ng-words.p", "ng-idxs.p"), match="JSON"),
    Row("prepro_ngrams bad split", "scripts/prepro_ngrams.py",
        ("--input_json", "{dataset}", "--dict_json", "{talk_json}", "--output_pkl", "{out}/ng", "--split", "dev"),
        ("ng-words.p", "ng-idxs.p"), match="split"),
    Row("prepro_ngrams output unwritable", "scripts/prepro_ngrams.py",
        ("--input_json", "{dataset}", "--dict_json", "{talk_json}", "--output_pkl", "{a_file}/ng"), match="a_file"),
    # ---- scripts/make_fineshapes.py
    Row("make_fineshapes n_train -5", "scripts/make_fineshapes.py",
        ("--n_train", "-5", "--images_dir", "{out}/fs", "--dataset_json", "{out}/fs.json"), ("fs", "fs.json"),
        match="n_train"),
    Row("make_fineshapes image_size 0", "scripts/make_fineshapes.py",
        ("--image_size", "0", "--images_dir", "{out}/fs", "--dataset_json", "{out}/fs.json"), ("fs", "fs.json"),
        match="image_size"),
    Row("make_fineshapes output unwritable", "scripts/make_fineshapes.py",
        ("--n_train", "2", "--n_val", "1", "--n_test", "1", "--n_restval", "0", "--n_eval", "1",
         "--images_dir", "{out}/fs", "--dataset_json", "{a_file}/fs.json"), ("fs/train",), match="a_file"),
    # ---- feature extraction
    Row("extraction batch_size 0", GRID, (*G, "--batch_size", "0"), ("feats_clip_clip_att",), match="batch_size"),
    Row("extraction resolution 0", GRID, (*G, "--resolution", "0"), ("feats_clip_clip_att",), match="resolution"),
    Row("extraction captioner as CLIP", GRID, (*G[:6], "--clip_model", "{ckpt}", *G[8:]), ("feats_m_att",),
        match="not a CLIP"),
    Row("extraction CLIP missing", GRID, (*G[:6], "--clip_model", "{out}/none.pt", *G[8:]), match="none.pt"),
    Row("extraction CLIP truncated", GRID, (*G[:6], "--clip_model", "{truncated_ckpt}", *G[8:]), match="truncated"),
    Row("extraction input missing", GRID, ("--input_json", "{out}/none.json", *G[2:]), match="none.json"),
    Row("extraction input truncated", GRID, ("--input_json", "{truncated_json}", *G[2:]), match="JSON"),
    Row("extraction cuda on a CPU build", GRID, (*G, "--device", "cuda"), ("feats_clip_clip_att",),
        needs_no_cuda=True, match="CUDA"),
    Row("extraction output unwritable", GRID, (*G[:-2], "--output_dir", "{a_file}/feats"), match="a_file"),
    Row("extraction changed images", GRID, (*G[:-2], "--output_dir", "{changed_out}", "--format", "packed",
                                             "--resolution", "64"),
        match="--redo"),
    Row("clipscore extraction batch_size 0", "scripts/clipscore_prepro_feats.py", (*G, "--batch_size", "0"),
        ("feats_clipscore_vis",), match="batch_size"),
    Row("FineCapEval extraction batch_size 0", "scripts_FineCapEval/clip_prepro_feats.py",
        (*G, "--batch_size", "0"), ("feats_clip_clip_att",), match="batch_size"),
    Row("FineCapEval clipscore input missing", "scripts_FineCapEval/clipscore_prepro_feats.py",
        ("--input_json", "{out}/none.json", *G[2:]), match="none.json"),
    # ---- tools/caption.py
    Row("caption non-image", CAPTION, ("{notes}", "--ckpt", "{ckpt}", "--device", "cpu"), match="notes.txt"),
    Row("caption missing image", CAPTION, ("{out}/none.png", "--ckpt", "{ckpt}", "--device", "cpu"),
        match="none.png"),
    Row("caption decompression bomb", CAPTION, ("{bomb}", "--ckpt", "{ckpt}", "--device", "cpu"),
        match="max_image_pixels"),
    Row("caption beam_size 0", CAPTION, ("{red_png}", "--ckpt", "{ckpt}", "--beam_size", "0"), match="beam_size"),
    Row("caption beam_size -2", CAPTION, ("{red_png}", "--ckpt", "{ckpt}", "--beam_size", "-2"), match="beam_size"),
    Row("caption cuda on a CPU build", CAPTION, ("{red_png}", "--ckpt", "{ckpt}", "--device", "cuda"),
        needs_no_cuda=True, match="CUDA"),
    Row("caption checkpoint truncated", CAPTION, ("{red_png}", "--ckpt", "{truncated_ckpt}", "--device", "cpu"),
        match="truncated"),
    Row("caption checkpoint missing", CAPTION, ("{red_png}", "--ckpt", "{out}/none.ckpt", "--device", "cpu"),
        match="not found"),
    Row("caption resolution 0", CAPTION, ("{red_png}", "--ckpt", "{ckpt}", "--resolution", "0", "--device", "cpu"),
        match="resolution"),
    Row("caption json unwritable", CAPTION, ("{red_png}", "--ckpt", "{ckpt}", "--device", "cpu",
                                             "--json", "{a_file}/c.json"), match="a_file"),
    # ---- tools/eval_clip_retrieval.py
    Row("retrieval eval results missing", "tools/eval_clip_retrieval.py",
        ("--gen_caption_path", "{out}/none.json", "--clip_model", "{clip}", "--image_features", "{vis}"),
        match="none.json"),
    Row("retrieval eval results truncated", "tools/eval_clip_retrieval.py",
        ("--gen_caption_path", "{truncated_json}", "--clip_model", "{clip}", "--image_features", "{vis}"),
        match="JSON"),
    Row("retrieval eval no captions", "tools/eval_clip_retrieval.py", ("--clip_model", "{clip}"),
        match="--gen_caption_path"),
    Row("retrieval eval --gt without input_json", "tools/eval_clip_retrieval.py", ("--gt", "--clip_model", "{clip}"),
        match="--input_json"),
    Row("retrieval eval features missing", "tools/eval_clip_retrieval.py",
        ("--gen_caption_path", "{gen}", "--clip_model", "{clip}", "--image_features", "{out}/none.npy",
         "--output", "{out}/r.json"), ("r.json",), match="none.npy"),
    Row("retrieval eval output unwritable", "tools/eval_clip_retrieval.py",
        ("--gen_caption_path", "{gen}", "--clip_model", "{clip}", "--image_features", "{vis}",
         "--output", "{a_file}/r.json"), match="a_file"),
    # ---- tools/eval_finecapeval.py
    Row("finecapeval csv missing", "tools/eval_finecapeval.py",
        ("--finecapeval_path", "{out}/none.csv", "--generated_id2caption", "{gen}", "--output", "{out}/f.json"),
        ("f.json",), match="none.csv"),
    Row("finecapeval generated missing", "tools/eval_finecapeval.py",
        ("--finecapeval_path", "{csv}", "--generated_id2caption", "{out}/none.json", "--output", "{out}/f.json"),
        ("f.json",), match="none.json"),
    Row("finecapeval generated truncated", "tools/eval_finecapeval.py",
        ("--finecapeval_path", "{csv}", "--generated_id2caption", "{truncated_json}", "--output", "{out}/f.json"),
        ("f.json",), match="JSON"),
    Row("finecapeval output unwritable", "tools/eval_finecapeval.py",
        ("--finecapeval_path", "{csv}", "--generated_id2caption", "{gen}", "--no_caption_metrics",
         "--output", "{a_file}/f.json"), match="a_file"),
    # ---- tools/convert_checkpoint.py, scripts/pack_features.py, other tools
    Row("convert truncated", "tools/convert_checkpoint.py", ("captioner", "{truncated_ckpt}", "{out}/c.ckpt"),
        ("c.ckpt",), match="truncated"),
    Row("convert missing", "tools/convert_checkpoint.py", ("captioner", "{out}/none.ckpt", "{out}/c.ckpt"),
        ("c.ckpt",), match="not found"),
    Row("convert unknown kind", "tools/convert_checkpoint.py", ("nonsense", "{ckpt}", "{out}/c.ckpt"),
        ("c.ckpt",), match="kind"),
    Row("pack missing folder", "scripts/pack_features.py", ("--input_dir", "{out}/none", "--output", "{out}/p.npy"),
        ("p.npy",), match="none"),
    Row("pack threads 0", "scripts/pack_features.py", ("--input_dir", "{out}", "--output", "{out}/p.npy",
                                                       "--threads", "0"), ("p.npy",), match="threads"),
    Row("finecapeval_inference batch_size 0", "tools/finecapeval_inference.py",
        ("--cfg", "{cfg}", "--id", "x", "--batch_size", "0"), match="batch_size"),
    Row("finecapeval_inference neither reward nor cfg", "tools/finecapeval_inference.py", (), match="--reward"),
    Row("make_report inputs missing", "tools/make_report.py", ("--out_dir", "{out}/demo"), ("demo/report.md",),
        match="report input missing"),
    Row("clipscore candidates missing", "tools/clipscore.py", ("{out}/none.json", "{out}", "--save_per_instance",
                                                              "{out}/scores.json"), ("scores.json",), match="not found"),
    Row("clipscore batch_size 0", "tools/clipscore.py", ("{out}/none.json", "{out}", "--batch_size", "0"),
        match="batch_size"),
    Row("app checkpoint missing", "tools/app.py", ("--no_demo_models", "--ckpt", "{out}/none.ckpt"),
        match="not found"),
    # ---- retrieval/train_pl.py
    Row("retrieval config missing", "retrieval/train_pl.py", ("--cfg", "{out}/none.yaml", "--id", "r"),
        match="not found"),
    Row("retrieval unknown key", "retrieval/train_pl.py", ("--id", "r", "--btach_size", "4"), match="batch_size"),
    Row("retrieval batch_size 1", "retrieval/train_pl.py", ("--id", "r", "--batch_size", "1"), match="batch_size"),
    Row("retrieval lr 0", "retrieval/train_pl.py", ("--id", "r", "--lr", "0"), match="lr"),
    Row("retrieval epochs 0", "retrieval/train_pl.py", ("--id", "r", "--epochs", "0"), match="epochs"),
]


def _truncate(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (no pixel data: PIL refuses it from the header alone)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def env(tiny_world_factory, tmp_path_factory) -> dict[str, str]:
    """Paths of a tiny world plus deliberately broken or mismatched files."""
    world, cfg = tiny_world_factory()
    d = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    tiny = clip.CLIP(**clip.model.tiny_clip_config("resnet")).eval()
    torch.save(tiny.state_dict(), d / "clip.pt")
    c = Config()
    for k, v in dict(att_feat_size=512, d_model=16, d_ff=32, N_enc=1, N_dec=1, num_att_heads=2,
                     feature_clip_model=str(d / "clip.pt"), feature_resolution=96).items():
        c.set(k, v)
    vocab = json.loads((world / "talk.json").read_text())["ix_to_word"]
    model = build_captioner(c, len(vocab))
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"config": c.to_flat_dict(), "vocab": vocab}}, d / "m.ckpt")
    (d / "binary.yml").write_bytes(bytes(range(256)))
    (d / "truncated.yml").write_text("batch_size: [1, 2\n")
    (d / "truncated.json").write_text('{"images": [{"id": 1')
    (d / "empty").write_bytes(b"")
    (d / "a_file").write_text("not a folder")
    (d / "notes.txt").write_text("hello")
    Image.new("RGB", (40, 30), (200, 10, 10)).save(d / "red.png")
    _png_header(d / "bomb.png", 20000, 20000)
    _truncate(world / "talk_label.h5", d / "truncated_label.h5")
    _truncate(d / "m.ckpt", d / "truncated.ckpt")
    _truncate(world / "att.npy", d / "truncated.npy")
    (d / "truncated.npy").with_suffix(".json").write_text((world / "att.json").read_text())
    np.save(d / "bad_index.npy", np.load(world / "att.npy"))
    (d / "bad_index.json").write_text('{"ids": [1, 2')
    (d / "corrupt.p").write_bytes(b"\x80\x02}q\x00(X")
    # another vocabulary: the same captions with every word changed
    dataset = json.loads((world / "dataset.json").read_text())
    for img in dataset["images"]:
        for s in img["sentences"]:
            s["tokens"] = [w.upper() for w in s["tokens"]]
    (d / "other_dataset.json").write_text(json.dumps(dataset))
    prepro_labels(d / "other_dataset.json", d / "other.json", d / "other", word_count_threshold=0)
    prepro_ngrams(d / "other_dataset.json", d / "other.json", str(d / "other_ng"), "train")
    prepro_ngrams(world / "dataset.json", world / "talk.json", str(d / "ng"), "train")
    other = json.loads((d / "other.json").read_text())
    (d / "old_other.json").write_text(json.dumps({"ix_to_word": other["ix_to_word"], "images": other["images"]}))
    # an original-style label file (no fingerprint) with an index past the vocabulary
    with h5py.File(world / "talk_label.h5") as src, h5py.File(d / "old_big_label.h5", "w") as dst:
        for key in src:
            dst.create_dataset(key, data=src[key][:])
        labels = dst["labels"][:]
        labels[0, 0] = len(vocab) + 3
        dst["labels"][...] = labels
    ids = [im["id"] for im in json.loads((world / "talk.json").read_text())["images"]]
    rng = np.random.default_rng(0)
    vis = rng.standard_normal((len(ids), tiny.text_projection.shape[1])).astype(np.float32)
    from captioning.data.features import write_packed
    write_packed(d / "vis.npy", ids, vis)
    (d / "gen.json").write_text(json.dumps({str(i): "a red circle" for i in ids}))
    (d / "fce.csv").write_text("image,caption,background,object,relation\n1.png,a red circle,grass,circle,on\n")
    # features extracted once; then one image changes
    changed = d / "changed"
    extract = runpy.run_path(str(ROOT / GRID))["main"]
    argv = [a.format(talk_json=world / "talk.json", images_root=world, clip=d / "clip.pt", out=d) for a in G[:-2]]
    assert extract([*argv, "--output_dir", str(changed), "--format", "packed", "--resolution", "64"]) == 0
    first = next((world / "images").rglob("*.png"))
    image = Image.open(first).convert("RGB")
    Image.fromarray(255 - np.asarray(image)).save(d / "changed_source.png")
    return {"cfg": str(cfg), "world": str(world), "talk_json": str(world / "talk.json"), "images_root": str(world),
            "dataset": str(world / "dataset.json"), "clip": str(d / "clip.pt"), "ckpt": str(d / "m.ckpt"),
            "binary": str(d / "binary.yml"), "truncated_yml": str(d / "truncated.yml"),
            "truncated_json": str(d / "truncated.json"), "empty": str(d / "empty"), "a_file": str(d / "a_file"),
            "notes": str(d / "notes.txt"), "red_png": str(d / "red.png"), "bomb": str(d / "bomb.png"),
            "truncated_h5": str(d / "truncated_label.h5"), "truncated_ckpt": str(d / "truncated.ckpt"),
            "truncated_npy": str(d / "truncated.npy"), "bad_index_npy": str(d / "bad_index.npy"),
            "corrupt_p": str(d / "corrupt.p"), "other_h5": str(d / "other_label.h5"),
            "other_json": str(d / "other.json"), "old_other_json": str(d / "old_other.json"),
            "other_ng": str(d / "other_ng"), "ng": str(d / "ng"), "old_big_h5": str(d / "old_big_label.h5"),
            "vis": str(d / "vis.npy"), "gen": str(d / "gen.json"), "csv": str(d / "fce.csv"),
            "changed_out": str(changed), "changed_image": str(first), "changed_source": str(d / "changed_source.png")}


_MAINS: dict[str, object] = {}


def _main(tool: str):
    if tool not in _MAINS:
        _MAINS[tool] = runpy.run_path(str(ROOT / tool))["main"]
    return _MAINS[tool]


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", str(args[0]) if args else None)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_is_one_error_line(row: Row, env, tmp_path, monkeypatch, capsys):
    if row.needs_no_cuda and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    monkeypatch.chdir(tmp_path)
    if row.id == "extraction changed images":
        original = Path(env["changed_image"]).read_bytes()
        Path(env["changed_image"]).write_bytes(Path(env["changed_source"]).read_bytes())
        monkeypatch.setattr("captioning.data.extract.extract", lambda *a, **k: pytest.fail("extracted anyway"))
    if row.patch:
        monkeypatch.setattr(f"{row.patch[0]}.{row.patch[1]}", _enospc)
    argv = [a.format(out=tmp_path, **env) for a in row.argv]
    try:
        status = _main(row.tool)(argv)
    finally:
        if row.id == "extraction changed images":
            Path(env["changed_image"]).write_bytes(original)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert status == 2, err
    assert len(errors) == 1, err
    assert "Traceback" not in err
    assert row.match.lower() in errors[0].lower() + err.lower(), err
    for out in row.outputs:
        assert not (tmp_path / out).exists(), f"partial output left: {out}"
    for folder in ("save", "eval_results"):
        assert not [p for p in (tmp_path / folder).rglob("*") if p.is_file()], f"files left in {folder}"


def test_matrix_covers_every_entry_point_and_is_documented():
    tools = {r.tool for r in ROWS}
    entry_points = {str(p.relative_to(ROOT)) for folder in ("tools", "scripts", "scripts_FineCapEval")
                    for p in (ROOT / folder).glob("*.py")} | {"retrieval/train_pl.py"}
    assert entry_points - tools <= {"tools/demo.py"}  # the demo only chains the others
    assert len(ROWS) >= 60
    doc = DOC.read_text()
    missing = [r.id for r in ROWS if f"`{r.id}`" not in doc]
    assert not missing, f"rows not in docs/RELIABILITY.md: {missing}"
