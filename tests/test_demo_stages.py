"""tools/demo.py skips a stage only when its outputs were made by the same command and config."""
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _demo():
    spec = importlib.util.spec_from_file_location("demo_tool", REPO / "tools" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_a_changed_config_or_command_invalidates_existing_outputs(tmp_path, monkeypatch):
    demo = _demo()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "base.yml").write_text("max_epochs: 2\n")
    (tmp_path / "configs" / "run.yml").write_text("_BASE_: base.yml\nbatch_size: 4\n")
    (tmp_path / "out.txt").write_text("made earlier")
    stage = demo.Stage("train", [sys.executable, "tools/train_pl.py", "--cfg", "configs/run.yml"], ["out.txt"])

    assert not stage.done({}), "outputs without a recorded signature (an older demo) must be made again"
    stamps = {"train": stage.signature()}
    assert stage.done(stamps)
    (tmp_path / "configs" / "base.yml").write_text("max_epochs: 4\n")  # a _BASE_ ancestor changes
    assert not stage.done(stamps)
    stamps = {"train": stage.signature()}
    assert stage.done(stamps)
    other = demo.Stage("train", [sys.executable, "tools/train_pl.py", "--cfg", "configs/run.yml", "--seed", "1"],
                       ["out.txt"])
    assert not other.done(stamps), "another command must not reuse the outputs"
    (tmp_path / "out.txt").unlink()
    assert not stage.done(stamps)


def test_the_interpreter_path_is_not_part_of_the_signature(tmp_path, monkeypatch):
    demo = _demo()
    monkeypatch.chdir(tmp_path)
    here = demo.Stage("s", [demo.PY, "scripts/x.py", "--n", "1"], []).signature()
    assert here != demo.Stage("s", [demo.PY, "scripts/x.py", "--n", "2"], []).signature()
    monkeypatch.setattr(demo, "PY", "/elsewhere/python")  # another checkout's virtual environment
    assert demo.Stage("s", ["/elsewhere/python", "scripts/x.py", "--n", "1"], []).signature() == here


def test_the_checkout_location_is_not_part_of_the_signature(tmp_path, monkeypatch):
    demo = _demo()
    signatures = []
    for place in ("a", "b"):
        root = tmp_path / place
        (root / "configs").mkdir(parents=True)
        (root / "configs" / "run.yml").write_text("max_epochs: 2\n")
        monkeypatch.chdir(root)
        signatures.append(demo.Stage("s", [demo.PY, "tools/train_pl.py", "--cfg", "configs/run.yml"], []).signature())
    assert signatures[0] == signatures[1]
