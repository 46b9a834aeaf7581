"""Web demo: caption your own image with every available model, side by side (``make app``).

    python tools/app.py                      # the five demo models under save/ (after `make demo`)
    python tools/app.py --ckpt save/clipRN50_clips/clipRN50_clips-last.ckpt --clip_model ViT-B/32

Upload an image (or click one of the FineShapes test images below the upload box): each model's
caption is shown with its CLIP-S against the image and, for a FineShapes image, the facts the
caption states, marked true or false against the scene. Greedy decoding or beam search is a
control. Models are loaded once, at start; the page serves on 127.0.0.1 (CPU is enough). A file
that is not an image, or too large, gets a message in the page.
"""
from __future__ import annotations

import html
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import clip
from captioning.cli import ArgumentParser, entry_point
from captioning.fineshapes import Scene
from captioning.fineshapes.dataset import load_scenes
from captioning.fineshapes.demo_runs import DEMO_RUNS
from captioning.inference import Captioner
from captioning.metrics import CLIPScorer, caption_claims
from captioning.rewards.clip_reward import eval_clip_source
from clip.grammar import GrammarCLIP, load_grammar_clip

CSS = """
#captions table { border-collapse: collapse; width: 100%; }
#captions th, #captions td { border-bottom: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; }
#captions .claim { display: inline-block; margin: 1px 3px; padding: 0 5px; border-radius: 4px; font-size: 90%; }
#captions .claim.true { background: #d9f2d9; } #captions .claim.false { background: #f8d7d7; }
#app-error { color: #a40000; font-weight: bold; }
"""


class UploadError(ValueError):
    """An upload the demo cannot caption; its message is shown in the page."""


@dataclass
class Model:
    label: str
    path: Path
    captioner: Captioner


@dataclass
class Row:
    label: str
    caption: str
    clip_s: float
    claims: list | None  # caption_claims(...) for FineShapes images, else None


def default_checkpoints(save_dir: str | Path) -> list[tuple[str, Path]]:
    """The demo models that exist under ``save_dir``: (label, ``<id>/<id>-last.ckpt``)."""
    found = [(label, Path(save_dir) / run_id / f"{run_id}-last.ckpt") for label, run_id, _ in DEMO_RUNS]
    return [(label, path) for label, path in found if path.is_file()]


class CaptionDemo:
    """The models, the CLIP-S CLIP and the FineShapes truth, loaded once; :meth:`run` answers a request."""

    def __init__(self, checkpoints: list[tuple[str, Path]], clip_model: str | None = None,
                 scenes_json: str | None = None, images_root: str = "datasets/FineShapes", device: str = "cpu",
                 max_upload_mb: float = 10.0, max_pixels: int = 25_000_000) -> None:
        if not checkpoints:
            raise FileNotFoundError("no captioner checkpoints: run `make demo` first, or pass --ckpt PATH")
        self.models = [Model(label, Path(path), Captioner.from_checkpoint(path, device=device))
                       for label, path in checkpoints]
        source = clip_model or eval_clip_source(self.models[0].captioner.cfg.reward)
        self.clip: GrammarCLIP = load_grammar_clip(source, device=device)
        self.clip_source = source
        self.preprocess = clip.transforms.clip_preprocess(self.clip.clip.visual.input_resolution)
        self.scorer = CLIPScorer(self.clip, batch_size=256)
        self.scenes: dict[str, Scene] = load_scenes(scenes_json) if scenes_json and Path(scenes_json).is_file() else {}
        self.files: dict[str, Path] = {}
        if self.scenes:
            with open(scenes_json, encoding="utf-8") as f:
                entries = json.load(f)["images"]
            self.files = {stem: Path(images_root) / e["file_path"] for stem, e in entries.items()}
            self.examples = [str(self.files[s]) for s, e in entries.items()
                             if e.get("split") == "test" and self.files[s].is_file()][:8]
        else:
            self.examples = []
        self.max_bytes = int(max_upload_mb * 1024 * 1024)
        self.max_pixels = max_pixels

    def open_upload(self, path: str | os.PathLike) -> Image.Image:
        """The uploaded image as RGB, or :class:`UploadError` with a readable reason."""
        name = Path(path).name
        size = Path(path).stat().st_size
        if size > self.max_bytes:
            raise UploadError(f"{name} is {size / 2**20:.2f} MB; the limit is {self.max_bytes / 2**20:.2f} MB")
        try:
            with Image.open(path) as img:
                if img.width * img.height > self.max_pixels:
                    raise UploadError(f"{name} has {img.width} x {img.height} pixels; the limit is "
                                      f"{self.max_pixels:,} pixels")
                img.load()
                return img.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            if isinstance(e, UploadError):
                raise
            raise UploadError(f"{name} is not an image that can be read (JPEG, PNG, ...)") from None

    def scene_of(self, path: str | os.PathLike, image: Image.Image) -> Scene | None:
        """The FineShapes scene when the upload is a FineShapes image (same file name, same pixels)."""
        stem = Path(path).stem
        known = self.files.get(stem)
        if known is None or not known.is_file():
            return None
        with Image.open(known) as ref:
            same = ref.size == image.size and np.array_equal(np.asarray(ref.convert("RGB")), np.asarray(image))
        return self.scenes[stem] if same else None

    @torch.inference_mode()
    def run(self, path: str | os.PathLike, beam_size: int = 1) -> tuple[Image.Image, list[Row], bool]:
        """(the image, one row per model, whether it is a FineShapes image)."""
        image = self.open_upload(path)
        scene = self.scene_of(path, image)
        captions = [m.captioner.caption([image], beam_size=beam_size)[0] for m in self.models]
        image_emb = clip.image_embeddings(self.clip.clip, self.preprocess(image)[None])
        scores = self.scorer.score(image_emb.expand(len(captions), -1), captions)["CLIP-S"]
        rows = [Row(m.label, c, float(s), caption_claims(c, scene) if scene is not None else None)
                for m, c, s in zip(self.models, captions, scores)]
        return image, rows, scene is not None

    def page(self, path: str | None, beam_size: int) -> tuple[Image.Image | None, str]:
        """The Gradio handler: (preview, HTML of the captions table or of the error)."""
        if not path:
            return None, ""
        try:
            image, rows, fineshapes = self.run(path, int(beam_size))
        except UploadError as e:
            return None, f'<div id="app-error">{html.escape(str(e))}</div>'
        return image, results_html(Path(path).name, rows, fineshapes, self.clip_source)


def _claims_html(row: Row, fineshapes: bool) -> str:
    if not fineshapes:
        return "–"
    if row.claims is None:
        return '<span class="claim false">not in the FineShapes grammar</span>'
    return " ".join(f'<span class="claim {"true" if c.true else "false"}" data-category="{c.category}">'
                    f'{"✓" if c.true else "✗"} {html.escape(c.text)}</span>' for c in row.claims) or "–"


def results_html(name: str, rows: list[Row], fineshapes: bool, clip_source: str) -> str:
    """One table row per model: caption, CLIP-S, and the claims for a FineShapes image."""
    head = "<tr><th>model</th><th>caption</th><th>CLIP-S</th>" + ("<th>claims (✓ true, ✗ false)</th>"
                                                                    if fineshapes else "") + "</tr>"
    body = "".join(
        f'<tr class="model-row" data-model="{html.escape(r.label)}"><td class="model">{html.escape(r.label)}</td>'
        f'<td class="caption">{html.escape(r.caption)}</td><td class="clips">{r.clip_s:.3f}</td>'
        + (f'<td class="claims">{_claims_html(r, fineshapes)}</td>' if fineshapes else "") + "</tr>"
        for r in rows)
    note = (f"CLIP-S = 2.5·max(cos, 0) with {html.escape(clip_source)}"
            + ("; a FineShapes image: claims checked against its scene" if fineshapes else ""))
    return (f'<div id="result" data-image="{html.escape(name)}"><table>{head}{body}</table>'
            f"<p><small>{note}</small></p></div>")


def build_ui(demo: CaptionDemo):
    """The Gradio page."""
    import gradio as gr

    with gr.Blocks(title="Fine-grained captioning with CLIP reward", analytics_enabled=False) as ui:
        gr.Markdown("## Fine-grained image captioning with CLIP reward\nUpload an image to caption it with "
                    f"{len(demo.models)} model(s): {', '.join(m.label for m in demo.models)}.")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="image (JPEG, PNG, ...)", type="filepath", elem_id="upload")
                beam = gr.Slider(1, 5, value=1, step=1, label="beam size (1 = greedy)", elem_id="beam")
                button = gr.Button("Caption", variant="primary", elem_id="caption-button")
                preview = gr.Image(label="image", type="pil", interactive=False, height=256)
                if demo.examples:
                    gr.Examples(demo.examples, inputs=[upload], label="FineShapes test images")
            with gr.Column(scale=2):
                results = gr.HTML(elem_id="captions")
        upload.change(demo.page, [upload, beam], [preview, results])
        button.click(demo.page, [upload, beam], [preview, results])
        beam.release(demo.page, [upload, beam], [preview, results])
    return ui


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--ckpt", action="append", default=[], metavar="[LABEL=]PATH",
                        help="a captioner checkpoint to add (repeatable; ours or the original's)")
    parser.add_argument("--save_dir", default="save", help="where the demo models are looked for")
    parser.add_argument("--no_demo_models", action="store_true", help="only the --ckpt models")
    parser.add_argument("--clip_model", default=None,
                        help="CLIP for CLIP-S (default: the first model's clip_model, e.g. the FineShapes CLIP)")
    parser.add_argument("--scenes", default="data/fineshapes_scenes.json", help="FineShapes truth (claims, examples)")
    parser.add_argument("--images_root", default="datasets/FineShapes", help="root of the scenes' file paths")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--max_upload_mb", type=float, default=10.0, help="larger uploads are refused in the page")
    args = parser.parse_args(argv)
    checkpoints = [] if args.no_demo_models else default_checkpoints(args.save_dir)
    for item in args.ckpt:
        named = "=" in item and not Path(item).is_file()
        label, _, path = item.partition("=") if named else (Path(item).stem, "", item)
        if not Path(path).is_file():
            print(f"error: checkpoint not found: {path}", file=sys.stderr)
            return 2
        checkpoints.append((label, Path(path)))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        demo = CaptionDemo(checkpoints, args.clip_model, args.scenes, args.images_root, device, args.max_upload_mb)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ui = build_ui(demo)
    try:
        ui.launch(server_name=args.host, server_port=args.port, prevent_thread_lock=True, quiet=True, css=CSS,
                  allowed_paths=[str(Path(args.images_root).resolve())], footer_links=[])
    except OSError as e:
        print(f"error: cannot serve on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 2
    print(f"[app] {len(demo.models)} model(s) ({', '.join(m.label for m in demo.models)}); "
          f"open http://{args.host}:{args.port}", flush=True)
    ui.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
