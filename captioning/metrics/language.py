"""COCO caption metrics through pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D and SPICE.

Mirrors the original ``eval_utils.language_eval`` (§5.1): PTB tokenisation of references and
predictions, then the coco-caption scorers. ``CIDEr`` is coco-caption's CIDEr-D with document
frequencies from the evaluated references (corpus mode), computed by the vectorised
``cider.CiderD`` (same numbers as pycocoevalcap's ``Cider``). Differences, all deliberate:

* References are passed in (``refs_from_karpathy`` / ``refs_from_coco``) instead of a
  hard-coded annotation file; every prediction must have references (no silent filtering).
* The METEOR JVM is started once per ``LanguageEvaluator`` and reused (start-up takes seconds).
* SPICE runs only when Stanford CoreNLP 3.6.0 is in pycocoevalcap's ``spice/lib`` (see
  ``coco-caption/get_stanford_models.sh``); otherwise it is skipped with one warning, never
  downloaded. It is run without SPICE's LMDB parse cache, whose serialiser fails on Java >= 16;
  the cache only speeds up re-parsing and does not change scores.
* Without Java (``java`` not on PATH) METEOR, SPICE and the PTB tokenizer are skipped; a simple
  lowercase, punctuation-stripping tokenizer is used and ``result["tokenizer"]`` says ``"simple"``.

Result: ``{"overall": {metric: value}, "imgToEval": {image_id: {"image_id", metric..., "caption"}},
"tokenizer": "ptb" | "simple", "skipped": {metric: reason}}``. ``SPICE_<category>`` (mean F over
images, NaN skipped) and ``bad_count_rate`` are added to ``overall`` as in the original.
"""
from __future__ import annotations

import atexit
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pycocoevalcap.spice
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from captioning.data.karpathy import image_id, split_images
from captioning.metrics.diversity import bad_count_rate
from captioning.utils.io import write_json
from cider import CiderD

ImageId = int | str
BLEU_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4")
SPICE_DIR = Path(pycocoevalcap.spice.__file__).parent
SPICE_JAR = SPICE_DIR / "spice-1.0.jar"
SPICE_CORENLP_JARS = (
    SPICE_DIR / "lib" / "stanford-corenlp-3.6.0.jar",
    SPICE_DIR / "lib" / "stanford-corenlp-3.6.0-models.jar",
)
_SIMPLE_TOKEN = re.compile(r"[^\W_]+|(?<=[^\W_])'[^\W_]+")
_LINE_BREAKS = re.compile("[\n\r\v\f\x85\u2028\u2029]")


def refs_from_karpathy(path: str | os.PathLike, split: str) -> dict[ImageId, list[str]]:
    """Raw reference sentences per image of one split of a Karpathy-format dataset JSON.

    Image ids and splits follow :mod:`captioning.data.karpathy`.
    """
    refs = {image_id(img): [s["raw"].strip() for s in img["sentences"]] for img in split_images(path, split)}
    return refs


def refs_from_coco(path: str | os.PathLike) -> dict[ImageId, list[str]]:
    """Reference captions per image id from a COCO captions annotation file."""
    with open(path) as f:
        annotations = json.load(f)["annotations"]
    refs: dict[ImageId, list[str]] = {}
    for ann in annotations:
        refs.setdefault(ann["image_id"], []).append(ann["caption"])
    return refs


def simple_tokenize(text: str) -> str:
    """Java-free stand-in for the PTB tokenizer: lowercase, drop punctuation, split ``'s``-style clitics."""
    return " ".join(_SIMPLE_TOKEN.findall(text.lower()))


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, stacklevel=3)


def missing_spice_jars() -> list[Path]:
    """The Stanford CoreNLP jars SPICE needs that are not installed."""
    return [p for p in SPICE_CORENLP_JARS if not p.is_file()]


def _check_inputs(
    predictions: Iterable[Mapping[str, Any]], references: Mapping[ImageId, list[str]]
) -> dict[ImageId, str]:
    captions: dict[ImageId, str] = {}
    for p in predictions:
        image_id, caption = p["image_id"], p["caption"]
        if not isinstance(caption, str):
            raise ValueError(f"caption of image {image_id!r} is not a string: {caption!r}")
        if captions.setdefault(image_id, caption) != caption:
            raise ValueError(f"image {image_id!r} has two different predicted captions")
    if not captions:
        raise ValueError("no predictions to evaluate")
    missing = [i for i in captions if not references.get(i)]
    if missing:
        raise ValueError(f"{len(missing)} predicted image(s) have no references, e.g. {missing[:5]}")
    return captions


def _one_line(text: str) -> str:
    return _LINE_BREAKS.sub(" ", text)


def _tokenize(captions: dict[ImageId, str], references: Mapping[ImageId, list[str]], java: bool):
    if not java:
        gts = {i: [simple_tokenize(r) for r in references[i]] for i in captions}
        res = {i: [simple_tokenize(c)] for i, c in captions.items()}
        return gts, res
    # One JVM start for both sides: keys are (side, image_id). The tokenizer works line by line,
    # so every character Java treats as a line break becomes a space.
    joint = {("ref", i): [{"caption": _one_line(r)} for r in references[i]] for i in captions}
    joint.update({("hyp", i): [{"caption": _one_line(c)}] for i, c in captions.items()})
    tokens = PTBTokenizer().tokenize(joint)
    if any(len(tokens.get(key, ())) != len(value) for key, value in joint.items()):
        raise RuntimeError("PTB tokenizer output is out of line with its input")
    return {i: tokens[("ref", i)] for i in captions}, {i: tokens[("hyp", i)] for i in captions}


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def run_spice(
    gts: dict[ImageId, list[str]], res: dict[ImageId, list[str]], timeout: float | None
) -> dict[ImageId, dict]:
    """Per-image SPICE scores ``{category: {pr, re, f, ...}}`` from tokenised references and hypotheses."""
    ids = list(res)
    with tempfile.TemporaryDirectory(prefix="spice_") as tmp:
        in_path, out_path = Path(tmp) / "in.json", Path(tmp) / "out.json"
        in_path.write_text(json.dumps([{"image_id": k, "test": res[i][0], "refs": gts[i]} for k, i in enumerate(ids)]))
        cmd = ["java", "-Xmx8G", "-jar", str(SPICE_JAR), str(in_path), "-out", str(out_path), "-subset", "-silent"]
        proc = subprocess.run(cmd, cwd=SPICE_DIR, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"SPICE exited with {proc.returncode}: {proc.stderr.strip()[-2000:]}")
        results = json.loads(out_path.read_text())
    by_index = {item["image_id"]: item["scores"] for item in results}
    return {
        i: {cat: {key: _float_or_nan(v) for key, v in s.items()} for cat, s in by_index[k].items()}
        for k, i in enumerate(ids)
    }


def _meteor_safe(text: str) -> str:
    """METEOR reads one line per segment and splits fields on ``|||``: keep both out of the text."""
    return text.replace("|||", " ").replace("\n", " ")


class LanguageEvaluator:
    """Runs the coco-caption metrics; keeps one METEOR JVM alive across ``evaluate`` calls.

    Close it (``close()``, or use it as a context manager) to stop the JVM.
    """

    def __init__(self, spice_timeout: float | None = 3600.0) -> None:
        self.spice_timeout = spice_timeout
        self._meteor: Meteor | None = None

    def _meteor_score(self, gts: dict, res: dict) -> tuple[float, list[float]]:
        if self._meteor is None or self._meteor.meteor_p.poll() is not None:
            self._meteor = Meteor()
        gts = {i: [_meteor_safe(r) for r in refs] for i, refs in gts.items()}
        res = {i: [_meteor_safe(h) for h in hyps] for i, hyps in res.items()}
        try:
            return self._meteor.compute_score(gts, res)
        except BaseException:
            self._discard_meteor()
            raise

    def _discard_meteor(self) -> None:
        meteor, self._meteor = self._meteor, None
        if meteor is None:
            return
        proc = meteor.meteor_p
        proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()
        if meteor.lock.locked():  # left held by a failed compute_score; its __del__ needs it
            meteor.lock.release()

    def close(self) -> None:
        """Stop the METEOR JVM (a later ``evaluate`` starts a new one)."""
        self._discard_meteor()

    def __enter__(self) -> "LanguageEvaluator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def evaluate(
        self,
        predictions: Iterable[Mapping[str, Any]],
        references: Mapping[ImageId, list[str]],
        spice: bool = True,
    ) -> dict[str, Any]:
        """Score ``[{image_id, caption}]`` against ``{image_id: [raw reference strings]}``.

        Identical duplicate predictions are merged; conflicting ones, or a prediction without
        references, raise ``ValueError``.
        """
        captions = _check_inputs(predictions, references)
        java = shutil.which("java") is not None
        skipped: dict[str, str] = {}
        if not java:
            reason = "Java not found on PATH"
            _warn_once(f"{reason}: METEOR, SPICE and the PTB tokenizer are skipped; using a simple tokenizer.")
            skipped.update(METEOR=reason, SPICE=reason)
        elif not spice:
            skipped["SPICE"] = "disabled"
        elif missing := missing_spice_jars():
            reason = f"Stanford CoreNLP jars not found: {', '.join(map(str, missing))}"
            _warn_once(f"SPICE skipped: {reason}. Run coco-caption/get_stanford_models.sh to install them.")
            skipped["SPICE"] = reason

        gts, res = _tokenize(captions, references, java)
        ids = list(captions)
        overall: dict[str, float] = {}
        per_image: dict[ImageId, dict[str, Any]] = {i: {"image_id": i} for i in ids}

        def record(name: str, score: float, scores: Iterable) -> None:
            overall[name] = float(score)
            for i, s in zip(ids, scores):
                per_image[i][name] = float(s)

        bleu, bleus = Bleu(4).compute_score(gts, res, verbose=0)
        for name, score, scores in zip(BLEU_KEYS, bleu, bleus):
            record(name, score, scores)
        if "METEOR" not in skipped:
            record("METEOR", *self._meteor_score(gts, res))
        record("ROUGE_L", *Rouge().compute_score(gts, res))
        record("CIDEr", *CiderD(df="corpus").compute_score(gts, res))
        if "SPICE" not in skipped:
            try:
                spice_scores = run_spice(gts, res, self.spice_timeout)
            except (RuntimeError, subprocess.TimeoutExpired, OSError) as err:
                warnings.warn(f"SPICE skipped: {err}")
                skipped["SPICE"] = str(err)
            else:
                _add_spice(spice_scores, overall, per_image)
        overall["bad_count_rate"] = bad_count_rate(list(captions.values()))
        for i, caption in captions.items():
            per_image[i]["caption"] = caption
        tokenizer = "ptb" if java else "simple"
        return {"overall": overall, "imgToEval": per_image, "tokenizer": tokenizer, "skipped": skipped}


def _add_spice(spice_scores: dict[ImageId, dict], overall: dict, per_image: dict) -> None:
    overall["SPICE"] = float(np.mean([s["All"]["f"] for s in spice_scores.values()]))
    categories = [c for c in next(iter(spice_scores.values())) if c != "All"]
    for category in categories:
        f = np.array([s[category]["f"] for s in spice_scores.values()], dtype=float)
        overall[f"SPICE_{category}"] = float(np.nanmean(f)) if np.isfinite(f).any() else math.nan
    for i, s in spice_scores.items():
        per_image[i]["SPICE"] = s


_DEFAULT: LanguageEvaluator | None = None


def language_eval(
    predictions: Iterable[Mapping[str, Any]], references: Mapping[ImageId, list[str]], spice: bool = True
) -> dict[str, Any]:
    """``LanguageEvaluator.evaluate`` with a process-wide evaluator (METEOR JVM closed at exit)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = LanguageEvaluator()
        atexit.register(_DEFAULT.close)
    return _DEFAULT.evaluate(predictions, references, spice=spice)


def merge_metrics(
    result: dict[str, Any],
    overall: Mapping[str, float] | None = None,
    per_image: Mapping[ImageId, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A copy of ``result`` with extra overall numbers and per-image fields (CLIP-S, RefCLIP-S, ...)."""
    merged = dict(result)
    merged["overall"] = {**result["overall"], **(overall or {})}
    img_to_eval = {i: dict(entry) for i, entry in result["imgToEval"].items()}
    for key, fields in (per_image or {}).items():
        if key not in img_to_eval:
            raise ValueError(f"per-image metrics for unknown image id {key!r}")
        img_to_eval[key].update(fields)
    merged["imgToEval"] = img_to_eval
    return merged


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_eval_results(
    result: dict[str, Any],
    run_id: str,
    split: str,
    eval_dir: str | os.PathLike = "eval_results",
    overall: Mapping[str, float] | None = None,
    per_image: Mapping[ImageId, Mapping[str, Any]] | None = None,
) -> Path:
    """Write ``<eval_dir>/<run_id>_<split>.json`` atomically, with optional extra metrics merged in.

    Image ids become strings (JSON keys) and NaN/inf become null.
    """
    path = Path(eval_dir) / f"{run_id}_{split}.json"
    write_json(path, _jsonable(merge_metrics(result, overall, per_image)))
    return path
