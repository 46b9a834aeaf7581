"""tools/app.py, the web demo: its answers (captions, CLIP-S, claims, errors) and the page in a real browser.

The browser test starts the app on a free port, drives the system Chromium with Playwright, and
compares the page with tools/caption.py run on the same image and checkpoints.
"""
import json
import runpy
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import clip
from captioning.config import Config
from captioning.fineshapes.dataset import load_scenes
from captioning.metrics import caption_claims
from captioning.metrics.clipscore import load_scorer
from captioning.models.configured import build_captioner

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "tools" / "app.py"
CAPTION = ROOT / "tools" / "caption.py"
CLIP = str(ROOT / "retrieval" / "pretrained" / "fineshapes_clip.pt")
ARTEFACTS = ROOT / "build" / "test-artefacts"


@pytest.fixture(scope="module")
def demo_inputs(tiny_world_factory, tmp_path_factory):
    """Two tiny captioners over the FineShapes CLIP's grid (different seeds), the world, a test image."""
    root, _ = tiny_world_factory()
    vocab = json.loads((root / "talk.json").read_text())["ix_to_word"]
    out = tmp_path_factory.mktemp("app")
    ckpts = []
    for seed, name in ((0, "alpha"), (1, "beta")):
        torch.manual_seed(seed)
        cfg = Config()
        for k, v in dict(att_feat_size=512, d_model=16, d_ff=32, N_enc=1, N_dec=1, num_att_heads=2,
                         feature_clip_model=CLIP, feature_resolution=128, clip_model=CLIP).items():
            cfg.set(k, v)
        model = build_captioner(cfg, len(vocab)).eval()
        state = {f"model.{k}": v for k, v in model.state_dict().items()}
        torch.save({"state_dict": state, "hyper_parameters": {"config": cfg.to_flat_dict(), "vocab": vocab}},
                   out / f"{name}.ckpt")
        ckpts.append((name, out / f"{name}.ckpt"))
    scenes = json.loads((root / "s.json").read_text())["images"]
    stem = next(s for s, e in scenes.items() if e["split"] == "test")
    return root, ckpts, root / scenes[stem]["file_path"], out


def caption_tool(image: Path, ckpt: Path, beam_size: int = 1) -> str:
    """What tools/caption.py prints for one image and checkpoint (run as a user would)."""
    out = subprocess.run([sys.executable, str(CAPTION), str(image), "--ckpt", str(ckpt), "--device", "cpu",
                          "--beam_size", str(beam_size)], capture_output=True, text=True, check=True, cwd=ROOT)
    path, caption = out.stdout.rstrip("\n").split("\t")
    assert path == str(image)
    return caption


@pytest.fixture(scope="module")
def demo(demo_inputs):
    app = runpy.run_path(str(APP))
    root, ckpts, _, _ = demo_inputs
    return app, app["CaptionDemo"](ckpts, None, str(root / "s.json"), str(root), "cpu", max_upload_mb=0.05)


def test_rows_match_caption_tool_clip_s_and_claims(demo, demo_inputs):
    app, d = demo
    root, ckpts, image, out = demo_inputs
    for beam in (1, 3):
        _, rows, fineshapes = d.run(image, beam)
        assert fineshapes and [r.label for r in rows] == ["alpha", "beta"]
        assert [r.caption for r in rows] == [caption_tool(image, path, beam) for _, path in ckpts]
    assert rows[0].caption != rows[1].caption
    reward = load_scorer(CLIP)
    with Image.open(image) as img:
        emb = reward.model.clip.encode_image(clip.transforms.clip_preprocess(96)(img.convert("RGB"))[None]).detach()
    expected = reward.clip_s(emb.expand(2, -1), reward.encode([r.caption for r in rows])[1])
    assert [r.clip_s for r in rows] == pytest.approx(expected.tolist(), abs=1e-5)
    scene = load_scenes(root / "s.json")[image.stem]
    assert [r.claims for r in rows] == [caption_claims(r.caption, scene) for r in rows]
    html = app["results_html"](image.name, rows, True, CLIP)
    assert html.count('class="model-row"') == 2 and "claims" in html


def test_same_name_other_pixels_is_not_a_fineshapes_image(demo, demo_inputs, tmp_path):
    _, d = demo
    _, _, image, _ = demo_inputs
    with Image.open(image) as img:
        changed = img.convert("RGB")
    changed.putpixel((0, 0), tuple(255 - c for c in changed.getpixel((0, 0))))
    changed.save(tmp_path / image.name)
    _, rows, fineshapes = d.run(tmp_path / image.name)
    assert not fineshapes and all(r.claims is None for r in rows)


def test_bad_uploads_are_messages(demo, tmp_path):
    app, d = demo
    (tmp_path / "notes.txt").write_text("hello")
    preview, html = d.page(str(tmp_path / "notes.txt"), 1)
    assert preview is None and 'id="app-error"' in html and "notes.txt is not an image" in html
    Image.new("RGB", (200, 200)).save(tmp_path / "big.bmp")  # 120 kB > the 0.05 MB limit
    _, html = d.page(str(tmp_path / "big.bmp"), 1)
    size = (tmp_path / "big.bmp").stat().st_size / 2**20
    assert f"big.bmp is {size:.2f} MB; the limit is 0.05 MB" in html and 'id="app-error"' in html
    Image.new("RGB", (20, 20)).save(tmp_path / "many.png")
    d.max_pixels = 399
    try:
        _, html = d.page(str(tmp_path / "many.png"), 1)
    finally:
        d.max_pixels = 25_000_000
    assert "many.png has 20 x 20 pixels; the limit is 399 pixels" in html


def test_missing_checkpoint_is_an_error_line(tmp_path):
    out = subprocess.run([sys.executable, str(APP), "--no_demo_models", "--ckpt", str(tmp_path / "none.ckpt")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [f"error: checkpoint not found: "
                                                                       f"{tmp_path / 'none.ckpt'}"]
    out = subprocess.run([sys.executable, str(APP), "--save_dir", str(tmp_path)], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 2 and out.stderr.startswith("error: no captioner checkpoints")


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("the browser test needs the system Chromium: apt-get install -y chromium (.ci/run does)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(proc: subprocess.Popen, port: int, timeout: float = 180.0) -> None:
    """Until the server accepts connections (or the process ends, or ``timeout`` seconds pass)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the app exited with status {proc.returncode}:\n{proc.stdout.read()}")
        with socket.socket() as s:
            s.settimeout(1.0)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"the app did not listen on port {port} within {timeout:.0f}s")


def test_browser_upload_shows_each_models_caption_and_errors(demo_inputs, tmp_path):
    from playwright.sync_api import sync_playwright

    root, ckpts, image, _ = demo_inputs
    expected = {label: caption_tool(image, path) for label, path in ckpts}
    port = free_port()
    cmd = [sys.executable, str(APP), "--no_demo_models", "--scenes", str(root / "s.json"), "--images_root", str(root),
           "--port", str(port), "--device", "cpu", *[f"--ckpt={label}={path}" for label, path in ckpts]]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(proc, port)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium(), headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
            page.locator("#upload input[type=file]").set_input_files(str(image))
            page.wait_for_selector(f'#result[data-image="{image.name}"] tr.model-row', timeout=120_000)
            rows = page.locator("tr.model-row").all()
            shown = {r.get_attribute("data-model"): r.locator("td.caption").inner_text() for r in rows}
            assert shown == expected
            assert len(rows) == len(ckpts) and page.locator("td.claims").count() == len(ckpts)
            ARTEFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTEFACTS / "app.png"), full_page=True)
            (tmp_path / "notes.txt").write_text("not an image")
            page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
            page.locator("#upload input[type=file]").set_input_files(str(tmp_path / "notes.txt"))
            error = page.wait_for_selector("#app-error", timeout=60_000)
            assert error.inner_text() == "notes.txt is not an image that can be read (JPEG, PNG, ...)"
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
