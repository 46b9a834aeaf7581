"""The demo over seeds: mean ± sd per cell and per-claim counts, the seed runs' stages, and skipping finished seeds."""
import copy
import importlib.util
import json
import random
import runpy
import statistics
import sys
from pathlib import Path

import pytest
from test_claims import BREAKS, TABLE

from captioning.evaluation.claims import ROLES
from captioning.evaluation.report import COLUMNS, results_table
from captioning.evaluation.seeds import aggregate, spread_markdown

REPO = Path(__file__).resolve().parents[1]


def _demo():
    spec = importlib.util.spec_from_file_location("demo_tool", REPO / "tools" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _noisy(seed: int) -> dict[str, dict]:
    rng = random.Random(seed)
    return {label: {k: v if k == "parse_rate" else v * (1 + 5e-4 * rng.uniform(-1, 1)) for k, v in row.items()}
            for label, row in TABLE.items()}  # parse rates tie at 1.0 (claim e); 0.05 % noise keeps the other claims


def test_mean_sd_per_cell_and_claims_held_per_seed(tmp_path):
    tables = [_noisy(s) for s in range(3)]
    broken = copy.deepcopy(tables[2])  # seed 2 breaks claims (a) and (f)
    for label, key, value in (BREAKS[0], BREAKS[5]):
        broken[label][key] = value
    tables[2] = broken
    tables[1]["CIDEr"]["R@1"] = float("nan")  # seed 1: claims (b), (f) not computable; the cell averages two seeds
    for seed, table in enumerate(tables):  # through report.json files, as the demo passes them
        (tmp_path / f"{seed}.json").write_text(json.dumps({**table, "paper_claims": []}))
    agg = aggregate([results_table(tmp_path / f"{s}.json") for s in range(3)], [0, 4, 7])
    for label in ROLES:
        for key in TABLE[label]:
            values = [t[label][key] for t in tables if t[label][key] == t[label][key]]
            cell = agg["rows"][label][key]
            assert cell["n"] == len(values)
            assert cell["mean"] == pytest.approx(statistics.mean(values))
            assert cell["sd"] == pytest.approx(statistics.stdev(values))
    assert agg["rows"]["CIDEr"]["R@1"]["n"] == 2
    assert [(c["held"], c["computable"]) for c in agg["claims"]] == [(2, 3), (2, 2), (3, 3), (3, 3), (3, 3), (1, 2)]
    assert agg["claims"][0]["per_seed"] == [True, True, False] and agg["claims"][1]["per_seed"][1] is None
    text = spread_markdown(agg, COLUMNS)
    mle = next(line for line in text.splitlines() if line.startswith("| MLE |")).split("|")
    cider = [c[1] for c in COLUMNS].index("CIDEr")
    values = [100 * t["MLE"]["CIDEr"] for t in tables]
    assert mle[2 + cider].strip() == f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"
    assert "| 2 of 3; failed in seed 7 |" in text and "2 of 3 (2 computable)" in text


def test_one_table_has_no_sd_and_no_tables_is_an_error():
    agg = aggregate([TABLE])
    assert agg["rows"]["MLE"]["CIDEr"]["sd"] is None and all(c["held"] == 1 for c in agg["claims"])
    assert "± " not in spread_markdown(agg, COLUMNS)
    with pytest.raises(ValueError):
        aggregate([])


def test_seed_zero_is_the_single_seed_demo_and_other_seeds_train_their_own_runs():
    demo = _demo()
    one, three = demo.stages(False, False, 1), demo.stages(False, False, 3)
    shared = [s for s in one if s.group != "seed0" and s.name != "report"]
    seed0 = [s for s in one if s.group == "seed0"]
    assert [s.command for s in three[:len(shared) + len(seed0)]] == [s.command for s in shared + seed0]
    for seed in (1, 2):
        train = [s for s in three if s.group == f"seed{seed}" and s.name.startswith("train ")]
        ids = [s.command[s.command.index("--id") + 1] for s in train]
        assert ids == [f"{run_id}_s{seed}" for _, run_id, _ in demo.RUNS]
        for stage in train:
            assert stage.command[stage.command.index("--seed") + 1] != str(demo.TrainConfig().seed)
            assert stage.outputs == [f"save/{stage.command[stage.command.index('--id') + 1]}/"
                                     f"{stage.command[stage.command.index('--id') + 1]}-last.ckpt"]
        assert all(s.command[s.command.index("--init_from") + 1] == f"save/{ids[0]}/{ids[0]}-last.ckpt"
                   for s in train[1:])
    names = [s.name for s in three]
    assert len(names) == len(set(names)) and names[-3:] == ["report (seed 1)", "report (seed 2)", "report"]
    report = three[-1].command
    assert report[report.index("--seed_reports") + 1] == "1:demo/seed1/report.json,2:demo/seed2/report.json"


def test_a_rerun_skips_finished_seeds_and_reruns_only_what_depends_on_a_missing_output(tmp_path, monkeypatch):
    demo = _demo()
    log = tmp_path / "ran.txt"

    def stage(name: str, group: str | None) -> "demo.Stage":
        out = f"out/{name}"
        code = (f"import pathlib; pathlib.Path('out').mkdir(exist_ok=True); pathlib.Path({out!r}).write_text('x'); "
                f"open({str(log)!r}, 'a').write({name!r} + '\\n')")
        return demo.Stage(name, [sys.executable, "-c", code], [out], group=group)

    plan = [stage("world", None), stage("mle0", "seed0"), stage("rl0", "seed0"), stage("mle1", "seed1"),
            stage("rl1", "seed1"), stage("report", None)]
    monkeypatch.setattr(demo, "stages", lambda *a: plan)
    monkeypatch.chdir(tmp_path)

    def run() -> list[str]:
        log.write_text("")
        assert demo.main([]) == 0
        return log.read_text().split()

    assert run() == ["world", "mle0", "rl0", "mle1", "rl1", "report"]
    assert run() == []
    (tmp_path / "out" / "mle1").unlink()  # an interrupted seed 1: seed 0 stays, seed 1 and the report re-run
    assert run() == ["mle1", "rl1", "report"]
    (tmp_path / "out" / "world").unlink()  # a shared stage: everything after it
    assert run() == ["world", "mle0", "rl0", "mle1", "rl1", "report"]


def test_bad_seed_options_are_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _demo().main(["--seeds", "0"]) == 2
    assert "error: --seeds must be >= 1" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["make_report.py", "--seed_reports", "demo/seed1/report.json"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(REPO / "tools" / "make_report.py"), run_name="__main__")
    assert e.value.code == 2 and "SEED:PATH" in capsys.readouterr().err
