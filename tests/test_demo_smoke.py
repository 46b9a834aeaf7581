"""The main job end to end on a tiny world (``tools/demo.py --smoke``): every report artefact exists."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LABELS = ["MLE", "CIDEr", "CLIP-S", "CLIP-S+CIDEr", "CLIP-S+Grammar"]


@pytest.mark.slow
def test_smoke_pipeline_writes_the_whole_report(tmp_path):
    for name in ("configs", "scripts", "scripts_FineCapEval", "tools"):
        (tmp_path / name).symlink_to(REPO / name)
    (tmp_path / "retrieval").mkdir()
    for name in ("configs", "pretrained", "train_pl.py"):
        (tmp_path / "retrieval" / name).symlink_to(REPO / "retrieval" / name)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(REPO / "tools" / "demo.py"), "--smoke"], cwd=tmp_path,
                            capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    demo = tmp_path / "demo"
    for name in ("report.md", "report.json", "captions.png", "curves.png", "timings.json"):
        assert (demo / name).is_file() and (demo / name).stat().st_size > 0, name
    report = (demo / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| ") and line.split("|")[1].strip() in LABELS]
    assert len(rows) == 5 and all(row.count("|") == 18 for row in rows), rows
    # BLEU-4, METEOR, ROUGE-L, CIDEr, CLIP-S, RefCLIP-S, R@1/5/10 are always numbers (truth precision is
    # undefined, "–", when a barely trained model states no parseable fact)
    assert all("–" not in row.split("|")[2:11] for row in rows), rows
    numbers = json.loads((demo / "report.json").read_text())
    assert set(numbers) == {*LABELS, "paper_claims"} and len(numbers["paper_claims"]) == 6
    for label in LABELS:
        for key in ("CIDEr", "CLIP-S", "R@1", "parse_rate", "grammar", "relation", "recall_all"):
            assert isinstance(numbers[label][key], float), (label, key)
    # a second run finds every output and skips every stage
    again = subprocess.run([sys.executable, str(REPO / "tools" / "demo.py"), "--smoke"], cwd=tmp_path,
                           capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and "skipped" in again.stdout and "train MLE:" not in again.stdout.replace(
        "train MLE: outputs exist", "")
