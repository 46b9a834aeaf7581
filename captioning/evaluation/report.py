"""The FineShapes reproduction report (``demo/report.md``): the paper-style table, captions, curves.

Inputs, per run id: ``eval_results/<id>_test.json`` (language metrics and test captions),
``eval_results/<id>_test_retrieval.json`` (text-to-image retrieval), the FineShapesEval scores
``FineCapEval_results/<id>_finecapeval.json`` and the training logs ``save/<id>/logs``. CLIP-S,
RefCLIP-S, the grammar score and the exact truth metrics are computed here, the same way for
every model: CLIP-S with the pretrained CLIP (not the grammar-tuned one), the grammar score with
the grammar head, on the test captions.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from captioning.data.features import open_features
from captioning.data.karpathy import image_id, split_images
from captioning.evaluation.claims import ROLES, check_claims, claims_markdown
from captioning.evaluation.seeds import aggregate, spread_markdown
from captioning.fineshapes.dataset import load_scenes
from captioning.metrics import CLIPScorer, truth_metrics
from captioning.metrics.clipscore import load_scorer
from captioning.metrics.language import refs_from_karpathy
from captioning.metrics.truth import Claim, caption_claims
from captioning.utils.io import write_json, write_text
from clip.images import open_rgb

COLUMNS = [  # (header, key, scale, format)
    ("BLEU-4", "Bleu_4", 100, "{:.1f}"), ("METEOR", "METEOR", 100, "{:.1f}"), ("ROUGE-L", "ROUGE_L", 100, "{:.1f}"),
    ("CIDEr", "CIDEr", 100, "{:.1f}"), ("CLIP-S", "CLIP-S", 1, "{:.3f}"), ("RefCLIP-S", "RefCLIP-S", 1, "{:.3f}"),
    ("R@1", "R@1", 1, "{:.1f}"), ("R@5", "R@5", 1, "{:.1f}"), ("R@10", "R@10", 1, "{:.1f}"),
    ("parse", "parse_rate", 100, "{:.1f}"), ("grammar", "grammar", 100, "{:.1f}"),
    ("FSE bg", "background", 1, "{:.1f}"), ("FSE obj", "object", 1, "{:.1f}"), ("FSE rel", "relation", 1, "{:.1f}"),
    ("truth P", "precision_all", 100, "{:.1f}"), ("truth R", "recall_all", 100, "{:.1f}"),
]


@dataclass(frozen=True)
class ReportInputs:
    """Where the report reads from."""

    runs: tuple[tuple[str, str], ...]          # (row label, run id)
    dataset_json: str                          # Karpathy JSON (references, image files)
    scenes_json: str | None                    # FineShapes truth (None: no truth columns)
    clip_model: str | None                     # CLIP for CLIP-S / RefCLIP-S
    clipscore_features: str | None             # CLIP-S image embeddings of the split's images
    grammar_clip: str | None                   # grammar CLIP (head) for the grammar score
    images_root: str = "datasets/FineShapes"
    eval_dir: str = "eval_results"
    finecapeval_dir: str = "FineCapEval_results"
    save_dir: str = "save"
    timings_json: str | None = None            # the demo's stage times
    split: str = "test"
    title: str = "FineShapes reproduction of *Fine-grained Image Captioning with CLIP Reward*"


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"report input missing: {path} (evaluate the run first; `make demo` for the demo)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _optional_json(path: Path) -> dict[str, Any] | None:
    return _read_json(path) if path.is_file() else None


def sort_ids(ids) -> list[str]:
    """Image ids in numeric order when they are numbers (COCO, FineShapes), else by name."""
    return sorted(ids, key=lambda i: (0, int(i), "") if str(i).isdigit() else (1, 0, str(i)))


def model_row(inp: ReportInputs, run_id: str, scenes: dict | None, refs: dict, scorer: CLIPScorer | None,
              img_feats, grammar: CLIPScorer | None) -> dict:
    """Every number of one table row, plus the captions."""
    results = _read_json(Path(inp.eval_dir) / f"{run_id}_{inp.split}.json")
    captions = {str(k): v["caption"] for k, v in results["imgToEval"].items()}
    ids = sort_ids(captions)
    row: dict[str, Any] = {k: results["overall"].get(k) for k in ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr",
                                                                  "CLIP-S", "RefCLIP-S")}
    ret = _optional_json(Path(inp.eval_dir) / f"{run_id}_{inp.split}_retrieval.json")
    if ret is not None:
        row.update({k: ret["t2i"][k] for k in ("R@1", "R@5", "R@10")})
    fse = _optional_json(Path(inp.finecapeval_dir) / f"{run_id}_finecapeval.json")
    if fse is not None:
        row.update({k: fse["criteria"][k] for k in ("background", "object", "relation")})
    if scenes is not None:
        row.update(truth_metrics(captions, scenes))
    if scorer is not None:
        image = torch.from_numpy(np.stack([np.asarray(img_feats[i], np.float32).reshape(-1) for i in ids]))
        scores = scorer.score(image, [captions[i] for i in ids], [refs[_ref_key(refs, i)] for i in ids])
        row["CLIP-S"] = float(scores["CLIP-S"].mean())
        row["RefCLIP-S"] = float(scores["RefCLIP-S"].mean())
    if grammar is not None:
        with torch.inference_mode():
            row["grammar"] = float(grammar.grammar(grammar.encode([captions[i] for i in ids])[0]).mean())
    row["captions"] = captions
    return row


def _ref_key(refs: dict, image_id: str) -> int | str:
    """The references' key of an image id (Karpathy ids are ints)."""
    return int(image_id) if image_id.isdigit() and int(image_id) in refs else image_id


def _fmt(value: Any, scale: float, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return fmt.format(value * scale)


def table_markdown(rows: dict[str, dict]) -> str:
    head = "| model | " + " | ".join(c[0] for c in COLUMNS) + " |"
    sep = "|---|" + "---:|" * len(COLUMNS)
    body = ["| " + label + " | " + " | ".join(_fmt(r.get(key), scale, fmt) for _, key, scale, fmt in COLUMNS) + " |"
            for label, r in rows.items()]
    return "\n".join([head, sep, *body])


def grid_images(rows: dict[str, dict], scenes: dict | None, candidates: list[str], n: int) -> list[str]:
    """The ``n`` images where the models differ most: by the spread (max - min) of true facts stated, then
    of false facts stated, with at most one image whose captions include one that does not parse (with
    scenes); else by the number of distinct captions. Ties by order of ``candidates``."""
    if scenes is None:
        return sorted(candidates, key=lambda i: -len({r["captions"][i] for r in rows.values()}))[:n]
    keyed = []
    for k, i in enumerate(candidates):
        claims = [caption_claims(r["captions"][i], scenes[i]) for r in rows.values()]
        trues, falses = zip(*map(_true_false, claims))
        keyed.append((-(max(trues) - min(trues)), -(max(falses) - min(falses)), k, i, None in claims))
    out, unparsed = [], 0
    for *_, i, has_unparsed in sorted(keyed):
        if len(out) == n:
            break
        if not has_unparsed or not unparsed:
            out.append(i)
            unparsed += has_unparsed
    return out


def _true_false(claims: list[Claim] | None) -> tuple[int, int]:
    """(true, false) facts of a caption; one that does not parse states none."""
    claims = claims or []
    return sum(c.true for c in claims), sum(not c.true for c in claims)


def caption_grid(inp: ReportInputs, rows: dict[str, dict], path: Path, n: int = 6,
                 scenes: dict | None = None) -> bool:
    """A PNG of the ``n`` test images where the models differ most, one row each, with every model's caption.

    With FineShapes ``scenes``, each caption shows its counts of true (✓) and false (✗) facts and names its
    false facts in red. Sized for a README column (10 in at 100 dpi, 10 pt text); False when no image exists.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {str(image_id(im)): Path(inp.images_root) / im.get("filepath", "") / im["filename"]
             for im in split_images(inp.dataset_json, inp.split)}
    shared = set.intersection(*(set(r["captions"]) for r in rows.values()))
    candidates = [i for i in sort_ids(shared) if i in files and files[i].is_file()
                  and (scenes is None or i in scenes)]
    ids = grid_images(rows, scenes, candidates, n)
    if not ids:
        return False
    lines_per_model = 2 if scenes is not None else 1
    row_h = max(1.9, 0.21 * len(rows) * lines_per_model + 0.3)
    fig = plt.figure(figsize=(10, row_h * len(ids)))
    grid = fig.add_gridspec(len(ids), 2, width_ratios=[1, 4.2], wspace=0.03, hspace=0.12)
    step = 1.0 / (len(rows) * lines_per_model + 0.5)
    for r, i in enumerate(ids):
        ax = fig.add_subplot(grid[r, 0])
        ax.imshow(open_rgb(files[i]))
        ax.set_axis_off()
        ax.set_title(f"image {i}", fontsize=9, pad=2)
        text_ax = fig.add_subplot(grid[r, 1])
        text_ax.set_axis_off()
        y = 1.0
        for k, (label, row) in enumerate(rows.items()):
            caption = row["captions"][i]
            head = f"{label}:"
            if scenes is not None:
                claims = caption_claims(caption, scenes[i])
                t, w = _true_false(claims)
                head = f"{label} ✓{t} ✗{w}:"
            text_ax.text(0.0, y, head, color=f"C{k % 10}", fontsize=10, fontweight="bold", va="top",
                         transform=text_ax.transAxes)
            shown = caption if len(caption) <= 80 else caption[:79] + "…"
            text_ax.text(0.34, y, shown, fontsize=10, va="top", transform=text_ax.transAxes)
            y -= step
            if scenes is not None:
                if claims is None:
                    note, colour = "does not parse: states no fact", "darkorange"
                else:
                    wrong = [f"{c.category}: {c.text}" for c in claims if not c.true]
                    note, colour = ("✗ " + "; ".join(wrong), "crimson") if wrong else ("all stated facts true",
                                                                                       "seagreen")
                text_ax.text(0.34, y, note, fontsize=9, color=colour, va="top", transform=text_ax.transAxes)
                y -= step
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return True


def read_log(save_dir: str, run_id: str) -> list[dict[str, str]]:
    """Rows of the newest CSV log of a run that trained (evaluation runs log no ``train/`` keys)."""
    logs = sorted(Path(save_dir, run_id, "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:]))
    for log in reversed(logs):
        with open(log, newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and any(k.startswith("train/") for k in rows[0]):
            return rows
    return []


def training_curves(inp: ReportInputs, path: Path) -> None:
    """Training loss of the MLE runs; loss, reward, validation CIDEr and CLIP-S of the SCST runs (runs that log
    ``train/reward``), with each MLE run's last validation value dashed; one colour per run in every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = {run_id: read_log(inp.save_dir, run_id) for _, run_id in inp.runs}
    scst = {run_id for run_id, rows in logs.items() if any(r.get("train/reward") for r in rows)}
    panels = [("train/loss", "MLE training loss", False), ("train/loss", "SCST loss", True),
              ("train/reward", "SCST reward - baseline", True), ("val/CIDEr", "val CIDEr (SCST)", True),
              ("val/CLIP-S", "val CLIP-S (SCST)", True)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.0))
    for ax, (key, title, phase2) in zip(axes, panels):
        for k, (label, run_id) in enumerate(inp.runs):
            points = [(int(r["step"]), float(r[key])) for r in logs[run_id] if r.get(key)]
            if not points:
                continue
            if (run_id in scst) == phase2:
                ax.plot(*zip(*points), label=label, color=f"C{k % 10}", marker=".")
            elif key.startswith("val/") and phase2:
                ax.axhline(points[-1][1], color=f"C{k % 10}", linestyle="--", label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
    handles: dict[str, Any] = {}
    for line in (h for ax in axes for h in ax.get_lines()):
        handles.setdefault(line.get_label(), line)
    fig.legend([handles[label] for label, _ in inp.runs if label in handles],
               [label for label, _ in inp.runs if label in handles], loc="lower center", ncol=len(inp.runs),
               fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def results_table(report_json: str | Path) -> dict[str, dict]:
    """The rows of a written ``report.json`` (its claims and spread left out)."""
    return {label: row for label, row in _read_json(Path(report_json)).items()
            if label not in ("paper_claims", "over_seeds")}


def build_report(inp: ReportInputs, out_dir: str = "demo", other_seeds: tuple[tuple[int, str], ...] = ()) -> Path:
    """Compute every row, write ``report.md``, ``report.json``, ``captions.png`` and ``curves.png``.

    ``other_seeds``: (seed, ``report.json``) of the same runs trained with other seeds; with them the
    report adds the mean ± sd over this table (seed 0) and theirs, and per claim the seeds it held in.
    """
    out = Path(out_dir)
    scenes = load_scenes(inp.scenes_json) if inp.scenes_json else None
    refs = refs_from_karpathy(inp.dataset_json, inp.split)
    grammar = load_scorer(inp.grammar_clip) if inp.grammar_clip else None
    scorer, img_feats = None, None
    if inp.clip_model and inp.clipscore_features:
        scorer = load_scorer(inp.clip_model, batch_size=256)
        img_feats = open_features(inp.clipscore_features)
    rows = {label: model_row(inp, run_id, scenes, refs, scorer, img_feats, grammar)
            for label, run_id in tqdm(inp.runs, desc="report rows", unit="run")}
    out.mkdir(parents=True, exist_ok=True)
    grid = caption_grid(inp, rows, out / "captions.png", scenes=scenes)
    training_curves(inp, out / "curves.png")
    timings = _read_json(Path(inp.timings_json)) if inp.timings_json and Path(inp.timings_json).is_file() else {}
    checks = check_claims(rows) if set(ROLES) <= set(rows) else []
    numbers: dict[str, Any] = {label: {k: v for k, v in r.items() if k != "captions"} for label, r in rows.items()}
    if checks:
        numbers["paper_claims"] = [c.to_json() for c in checks]
    spread = None
    if other_seeds:
        tables = [{label: numbers[label] for label in rows}] + [results_table(p) for _, p in other_seeds]
        spread = aggregate(tables, [0] + [seed for seed, _ in other_seeds])
        numbers["over_seeds"] = spread
    write_json(out / "report.json", numbers, indent=2)
    lines = [
        f"# {inp.title}",
        "",
        f"Split {inp.split}: {len(next(iter(rows.values()))['captions'])} images. BLEU-4, METEOR, ROUGE-L, CIDEr: "
        f"coco-caption (×100). CLIP-S / RefCLIP-S: 2.5·max(cos, 0) with {inp.clip_model or 'the evaluation CLIP'}. "
        "R@K: text-to-image retrieval (%). parse: share of captions in the FineShapes grammar (%); "
        "grammar: mean P(grammatical) of the grammar head (%). FSE: FineShapesEval background / object / "
        "relation, original substring rule. truth P / R: precision of stated facts and recall of true facts (%).",
        "",
        table_markdown(rows),
        "",
        ("![captions](captions.png)\n\nCaptions of the test images where the models differ most (spread of true "
         "facts stated); with FineShapes truth, ✓/✗ count each caption's true and false facts and the false ones "
         "are named in red." if grid else "(no caption grid: the images are not under the images root)"),
        "",
        "![training curves](curves.png)",
        "",
        "Phase 2 starts from the MLE weights. Dashed: the MLE run's last validation value (on its whole val "
        "split, where a run may validate on fewer images: see limit_val_batches in its config).",
        "",
    ]
    if checks:
        lines += ["## The paper's claims, computed from this table", "", claims_markdown(checks), ""]
    if spread:
        lines += [f"## Spread over {spread['n_seeds']} seeds (mean ± sd; seeds {', '.join(map(str, spread['seeds']))})",
                  "", "The same world, features and CLIPs; each seed trains MLE and the four SCST runs again "
                  "(initialisation, data order, dropout and sampling). Sample sd over seeds.", "",
                  spread_markdown(spread, COLUMNS), ""]
    if timings:
        lines += ["## Time per stage", "", "| stage | seconds |", "|---|---:|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in timings.get("stages_s", {}).items()]
        lines += [f"| **total** | {timings.get('total_s', float('nan')):.1f} |", ""]
    write_text(out / "report.md", "\n".join(lines))
    return out / "report.md"
