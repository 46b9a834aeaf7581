"""--help of every entry point, --print_config, and config ranges checked at resolve time."""
from __future__ import annotations

import dataclasses
import runpy
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from captioning import cli
from captioning.config import Config, ConfigError, key_help, load_config, parse_args
from retrieval.config import RetrievalConfig

ROOT = Path(__file__).resolve().parents[1]
TOOLS = sorted(str(p.relative_to(ROOT)) for folder in ("tools", "scripts", "scripts_FineCapEval")
               for p in (ROOT / folder).glob("*.py")) + ["retrieval/train_pl.py"]


@pytest.mark.parametrize("schema", [Config, RetrievalConfig])
def test_every_key_has_a_meaning_in_the_schema(schema):
    hints = typing.get_type_hints(schema)
    for section_cls in (hints[f.name] for f in dataclasses.fields(schema)):
        helps = key_help(section_cls)
        assert set(helps) == {f.name for f in dataclasses.fields(section_cls)}
        assert all(helps.values()), [k for k, v in helps.items() if not v]


def test_train_pl_help_lists_every_key_with_type_default_and_meaning():
    out = subprocess.run([sys.executable, "tools/train_pl.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage:")
    cfg = Config()
    for section in dataclasses.fields(Config):
        assert f"\n{section.name}: " in out.stdout
        section_cls = typing.get_type_hints(Config)[section.name]
        for f in dataclasses.fields(section_cls):
            line = next(ln for ln in out.stdout.splitlines() if ln.startswith(f"  --{f.name} ("))
            assert f"default {getattr(getattr(cfg, section.name), f.name)!r}" in line
    assert "--batch_size (int, default 16; >= 1)" in out.stdout


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_prints_usage_and_documents_each_option(tool, capsys, monkeypatch):
    main = runpy.run_path(str(ROOT / tool))["main"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")
    if tool in ("tools/train_pl.py", "retrieval/train_pl.py"):
        return  # generated from the config schema (test above)
    parsers = []

    def capture(self, args=None, namespace=None):
        parsers.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(cli.ArgumentParser, "parse_args", capture)
    with pytest.raises(SystemExit):
        main([])
    (parser,) = parsers
    undocumented = [a.dest for a in parser._actions if a.dest != "help" and not a.help]
    assert not undocumented, f"{tool}: options without help: {undocumented}"
    assert parser.formatter_class is cli.HelpFormatter  # shows every default


def test_print_config_prints_the_resolved_config(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--batch_size", "7", "--print_config", "--beam_size", "3"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    (tmp_path / "c.yml").write_text(printed)
    again = load_config(tmp_path / "c.yml")
    assert again.data.batch_size == 7 and again.decode.beam_size == 3
    flat = {k: v for part in yaml.safe_load_all(printed) for k, v in (part or {}).items()}
    assert flat["batch_size"] == 7


@pytest.mark.parametrize("key,value,words", [
    ("batch_size", "0", ">= 1"), ("seq_per_img", "-1", ">= 1"), ("beam_size", "0", ">= 1"),
    ("dropout", "1.5", "in [0, 1]"), ("temperature", "0", "> 0"), ("learning_rate", "-1", "> 0"),
    ("grad_clip_mode", "sideways", "one of norm, value"), ("noamopt_warmup", "0", ">= 1"),
])
def test_out_of_range_values_are_refused_at_resolve_time(key, value, words):
    with pytest.raises(ConfigError, match=key) as info:
        load_config(overrides={key: value})
    assert words in str(info.value)


def test_in_range_edges_are_accepted_and_heads_must_divide_d_model():
    cfg = load_config(overrides={"batch_size": "1", "dropout": "0", "max_epochs": "-1", "d_model": "12",
                                 "num_att_heads": "3"})
    assert (cfg.data.batch_size, cfg.model.dropout, cfg.model.d_model) == (1, 0.0, 12)
    with pytest.raises(ConfigError, match="divisible"):
        load_config(overrides={"d_model": "130", "num_att_heads": "8"})
