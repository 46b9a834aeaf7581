"""Strict YAML configs: inheritance, overrides, typing, unknown and duplicate keys."""
from pathlib import Path

import pytest

from captioning.config import Config, ConfigError, dump_config, load_config, parse_args

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_are_the_originals_effective_defaults():
    cfg = Config()
    assert cfg.get("grad_clip_value") == 0.1
    assert cfg.get("drop_prob_lm") == 0.5
    assert cfg.get("cached_tokens") == "coco-train-idxs"
    assert cfg.get("max_length") == 20
    assert cfg.get("beam_size") == 1
    assert cfg.get("cider_reward_weight") == 1.0
    assert cfg.get("self_critical_after") == -1


def test_base_inheritance_and_relative_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "base.yml", "batch_size: 200\nnoamopt: true\nd_model: 512\n")
    child = write(tmp_path / "sub" / "child.yml", "_BASE_: ../base.yml\nnoamopt: false\nlearning_rate: 5e-6\n")
    cfg = load_config(child)
    assert cfg.get("batch_size") == 200          # inherited
    assert cfg.get("noamopt") is False           # overridden by the child
    assert cfg.get("learning_rate") == pytest.approx(5e-6)  # "5e-6" is a string to PyYAML; typed to float
    assert cfg.model.d_model == 512


def test_base_cycle_is_an_error(tmp_path):
    write(tmp_path / "a.yml", "_BASE_: b.yml\n")
    write(tmp_path / "b.yml", "_BASE_: a.yml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yml")


def test_cli_overrides_win_over_set_cfgs_and_yaml(tmp_path):
    f = write(tmp_path / "c.yml", "batch_size: 200\nmax_epochs: 25\nid: from_yaml\n")
    cfg, path = parse_args(["--cfg", str(f), "--set_cfgs", "batch_size", "8", "max_epochs", "3",
                            "--batch_size", "4", "--id=run1", "--noamopt"])
    assert path == str(f)
    assert cfg.get("batch_size") == 4            # explicit flag beats --set_cfgs
    assert cfg.get("max_epochs") == 3            # --set_cfgs beats YAML
    assert cfg.get("id") == "run1"
    assert cfg.get("noamopt") is True            # bare flag on a boolean key


@pytest.mark.parametrize("text,match", [
    ("batch_size: lots\n", r"'batch_size' expects int"),
    ("noamopt: maybe\n", r"'noamopt' expects bool"),
    ("learning_rate: [1, 2]\n", r"'learning_rate' expects float"),
    ("batch_size: 2.5\n", r"'batch_size' expects int"),
])
def test_wrong_types_are_errors_naming_file_and_key(tmp_path, text, match):
    f = write(tmp_path / "bad.yml", text)
    with pytest.raises(ConfigError, match=match) as e:
        load_config(f)
    assert "bad.yml" in str(e.value)


def test_unknown_key_names_file_and_closest_key(tmp_path):
    f = write(tmp_path / "typo.yml", "batch_sise: 10\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert "typo.yml" in msg and "'batch_sise'" in msg and "did you mean 'batch_size'" in msg


def test_unknown_cli_key_is_an_error():
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        parse_args(["--learning_rat", "0.1"])


def test_duplicate_yaml_key_is_an_error_with_lines(tmp_path):
    f = write(tmp_path / "dup.yml", "noamopt: true\nbatch_size: 3\nnoamopt: false\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert "dup.yml" in msg and "'noamopt'" in msg and "line 3" in msg and "line 1" in msg


def test_set_cfgs_needs_pairs():
    with pytest.raises(ConfigError, match="pairs"):
        load_config(None, set_cfgs=["batch_size"])


def test_none_values_for_optional_keys(tmp_path):
    f = write(tmp_path / "n.yml", "input_label_h5: none\nclip_load_path: null\n")
    cfg = load_config(f)
    assert cfg.get("input_label_h5") is None and cfg.get("clip_load_path") is None


def test_resolved_config_round_trips(tmp_path):
    cfg, _ = parse_args(["--cfg", str(REPO / "configs/phase2/clipRN50_clips_grammar.yml"), "--id", "x"])
    out = tmp_path / "resolved.yml"
    out.write_text(dump_config(cfg))
    assert load_config(out) == cfg


PHASE2 = {
    # file: (batch_size, use_clipscore, clipscore_reward_weight, use_multi_rewards, use_grammar)
    "clipRN50_cider": (200, False, 1.0, False, False),
    "clipRN50_clips": (160, True, 2.0, False, False),
    "clipRN50_cider_clips": (160, True, 2.0, True, False),
    "clipRN50_clips_grammar": (160, True, 2.0, True, True),
}


def test_faithful_phase1_config():
    cfg = load_config(REPO / "configs/phase1/clipRN50_mle.yml")
    assert (cfg.get("noamopt"), cfg.get("noamopt_warmup"), cfg.get("batch_size"), cfg.get("max_epochs")) == (True, 20000, 200, 25)
    sizes = (cfg.get("N_enc"), cfg.get("N_dec"), cfg.get("d_model"), cfg.get("d_ff"), cfg.get("num_att_heads"))
    assert sizes == (6, 6, 512, 2048, 8)
    assert cfg.get("precision") == "16" and cfg.get("self_critical_after") == -1 and cfg.get("seq_per_img") == 5
    assert cfg.get("input_att_dir") == "data/cocotalk_clip_RN50_att"


@pytest.mark.parametrize("name", sorted(PHASE2))
def test_faithful_phase2_configs(name):
    cfg = load_config(REPO / f"configs/phase2/{name}.yml")
    batch, clips, w, multi, grammar = PHASE2[name]
    assert cfg.get("batch_size") == batch
    assert cfg.get("use_clipscore") is clips and cfg.get("clipscore_reward_weight") == w
    assert cfg.get("use_multi_rewards") is multi and cfg.get("use_grammar") is grammar
    assert cfg.get("use_grammar_baseline") is grammar
    assert cfg.get("noamopt") is False and cfg.get("learning_rate") == pytest.approx(5e-6)
    assert cfg.get("learning_rate_decay_start") == -1
    # 15 RL epochs from --init_from (the original resumed epoch 25 of 40 with self_critical_after 15)
    assert (cfg.get("self_critical_after"), cfg.get("max_epochs"), cfg.get("precision")) == (0, 15, "32")
    assert cfg.get("cider_reward_weight") == 1.0 and cfg.get("train_sample_n") == 5
    assert cfg.get("checkpoint_path") == f"save/{name}"


@pytest.mark.parametrize("reward", ["mle", "cider", "clips", "cider_clips", "clips_grammar"])
def test_finecapeval_configs(reward):
    phase = "phase1" if reward == "mle" else "phase2"
    cfg = load_config(REPO / f"configs/{phase}/FineCapEval_clipRN50_{reward}.yml")
    assert cfg.get("input_json") == "data/FineCapEval.json"
    assert cfg.get("input_label_h5") is None
    assert cfg.get("input_att_dir") == "data/FineCapEval_clip_RN50_att"
    assert cfg.get("checkpoint_path") == f"save/clipRN50_{reward}"
    assert cfg.get("use_clipscore") is False
