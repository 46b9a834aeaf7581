"""Config key ``loggers``: a W&B offline run of each trainer holds the metrics its CSV log holds."""
import csv
import json
import struct
import time
from pathlib import Path

import pytest

from captioning.config import ConfigError, load_config
from captioning.training import run as train_pl
from captioning.training.loggers import build_loggers
from retrieval import run as retrieval_run

BLOCK, HEADER = 32768, 7  # the .wandb file is a LevelDB-style log of protobuf records


def wandb_run(folder: Path, timeout: float = 60.0) -> tuple[dict, list[dict]]:
    """(the run record's name and project, the history rows) of the one offline run under ``folder/wandb``,
    once its file ends with the run's exit record (wandb's service closes it after ``wandb.finish``)."""
    (path,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    deadline = time.monotonic() + timeout
    while True:
        run, history, finished = read_wandb_file(path)
        if finished:
            return run, history
        assert time.monotonic() < deadline, f"{path} has no exit record after {timeout:.0f}s"
        time.sleep(0.1)


def read_wandb_file(path: Path) -> tuple[dict, list[dict], bool]:
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, chunk, run, history, finished = path.read_bytes(), HEADER, b"", {}, [], False
    assert data[:4] == b":W&B"
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if left < HEADER or (kind == 0 and length == 0):
            pos += left
            continue
        chunk += data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(chunk)
            chunk = b""
            if record.WhichOneof("record_type") == "run":
                run = {"name": record.run.display_name, "project": record.run.project}
            elif record.WhichOneof("record_type") == "history":
                history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                for item in record.history.item})
            finished |= record.WhichOneof("record_type") == "exit"
    return run, history, finished


def csv_series(folder: Path, key: str) -> dict[int, float]:
    (log,) = folder.glob("logs/version_*/metrics.csv")
    with open(log, newline="") as f:
        return {int(r["step"]): float(r[key]) for r in csv.DictReader(f) if r.get(key)}


def wandb_series(history: list[dict], key: str) -> dict[int, float]:
    return {int(r["trainer/global_step"]): float(r[key]) for r in history if key in r}


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    yield
    wandb.finish()


def test_captioner_wandb_run_holds_the_logged_metrics(tiny_world_factory, tmp_path, offline):
    import wandb

    _, cfg = tiny_world_factory()
    save = tmp_path / "save"
    assert train_pl.main(["--cfg", str(cfg), "--checkpoint_path", str(save), "--id", "wb_run", "--loggers",
                          "csv,wandb", "--wandb_project", "fineshapes-test", "--losses_log_every", "1"]) == 0
    wandb.finish()
    run, history = wandb_run(save)
    assert run == {"name": "wb_run", "project": "fineshapes-test"}
    losses = csv_series(save, "train/loss")
    assert len(losses) == 3  # 30 images, batches of 10, every step logged
    assert wandb_series(history, "train/loss") == pytest.approx(losses)
    assert wandb_series(history, "val/loss") == pytest.approx(csv_series(save, "val/loss"))
    assert not (save / "tb").exists()  # only the chosen trackers


def test_retrieval_wandb_run_holds_the_logged_metrics(tiny_world_factory, tmp_path, offline):
    import wandb

    root, _ = tiny_world_factory()
    save = tmp_path / "save"
    argv = ["--task", "pretrain", "--id", "wb_clip", "--scenes_json", str(root / "s.json"), "--input_json",
            str(root / "talk.json"), "--input_dataset_json", str(root / "dataset.json"), "--images_root", str(root),
            "--checkpoint_dir", str(save), "--num_workers", "0", "--embed_dim", "32", "--image_resolution", "32",
            "--vision_width", "8", "--transformer_width", "32", "--transformer_layers", "1", "--batch_size", "8",
            "--valid_batch_size", "8", "--epochs", "1", "--losses_log_every", "1", "--loggers", "[csv, wandb]"]
    assert retrieval_run.main(argv) == 0
    wandb.finish()
    run, history = wandb_run(save)
    assert run["name"] == "wb_clip" and run["project"] == "clip-caption-reward-retrieval"
    losses = csv_series(save, "train/loss")
    assert len(losses) > 2 and wandb_series(history, "train/loss") == pytest.approx(losses)


def test_logger_choice_is_checked(tiny_world_factory, tmp_path, capsys):
    _, cfg = tiny_world_factory()
    assert train_pl.main(["--cfg", str(cfg), "--checkpoint_path", str(tmp_path), "--id", "x",
                          "--loggers", "csv,mlflow"]) == 2
    assert capsys.readouterr().err.startswith("error: loggers: ['csv', 'mlflow'] must name at least one of")
    yml = tmp_path / "c.yml"
    yml.write_text("loggers: [tensorboard]\n")
    assert load_config(yml).train.loggers == ["tensorboard"]
    assert load_config().train.loggers == ["csv", "tensorboard"]
    with pytest.raises(ConfigError):
        build_loggers("x", tmp_path, [])
    assert [type(lg).__name__ for lg in build_loggers("x", tmp_path, ["tensorboard", "csv"])] == [
        "TensorBoardLogger", "CSVLogger"]
