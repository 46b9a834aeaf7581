"""bench/gpu_smoke.py (the prepared GPU run) works: its --dry-run on the CPU passes every check."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_smoke_dry_run_passes_every_check():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "bench/gpu_smoke.py", "--dry-run"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.endswith(("yes", "NO"))]
    assert [r.split()[0] for r in rows] == ["MLE", "SCST", "grid", "cached"]
    assert all(r.endswith("yes") for r in rows)
