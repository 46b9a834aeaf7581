"""Original captioner checkpoints: a synthetic Lightning-1.0 file with the released layout (state_dict under
the original names plus pickled _vocab/_opt, a __main__.ModelCheckpoint callback, optimizer states) is read
without running any code from it, converts to our format, and decodes exactly like the same weights loaded
directly; foreign classes in _opt are refused."""
import argparse
import os
import pickle
import runpy
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from captioning.checkpoints import (
    Neutralised,
    convert_captioner_checkpoint,
    load_lightning_checkpoint,
    read_captioner_checkpoint,
    save_captioner_checkpoint,
    unpickle_options,
)
from captioning.config import Config, config_from_dict
from captioning.models import TransformerCaptioner, decode_sequence, sample

CONVERT_TOOL = str(Path(__file__).resolve().parents[1] / "tools" / "convert_checkpoint.py")
VOCAB = {str(i): w for i, w in enumerate(["a", "red", "blue", "circle", "square", "on", "grass", "sand", "UNK"], 1)}
SIZES = dict(att_feat_size=10, d_model=16, d_ff=24, n_enc=2, n_dec=1, num_heads=4, drop_prob_lm=0.3, max_length=7)
OPTIONS = dict(  # what the original's parse_opt + train_pl leave on the options object
    caption_model="transformer", N_enc=2, N_dec=1, d_model=16, d_ff=24, num_att_heads=4, dropout=0.1,
    drop_prob_lm=0.3, att_feat_size=10, max_length=7, num_layers=6, input_encoding_size=512, rnn_size=512,
    rnn_type="lstm", use_clipscore=0.0, grad_clip_mode="value", checkpoint_path="save/run/run", start_from="save/run",
    set_cfgs=[], vocab_size=len(VOCAB), seq_length=16, id="run", beam_size=1, sample_method="greedy",
    block_trigrams=0, remove_bad_endings=0, current_lr=5e-6, cached_transformer=False, use_fc=False, use_att=True,
)

TRAPPED = []


def _trap(*args):
    TRAPPED.append(args)
    return args


class Trap:
    """Unpickles by calling _trap: a stand-in for arbitrary code in a checkpoint."""

    def __reduce__(self):
        return _trap, ("payload",)


class ModelCheckpoint:
    """Pickled as __main__.ModelCheckpoint, like the original's callback class."""


ModelCheckpoint.__module__ = "__main__"


def pickled_options(options, monkeypatch, extra=None):
    """Bytes of a captioning.utils.opts.Config object, made the way Python pickles the original class."""
    module = types.ModuleType("captioning.utils.opts")

    class Config:
        def __init__(self, **kwargs):
            for k, v in kwargs.items():
                setattr(self, k, v)

    Config.__module__, Config.__qualname__ = "captioning.utils.opts", "Config"
    module.Config = Config
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "captioning.utils.opts", module)
        return pickle.dumps(Config(**options, **(extra or {})), protocol=3)


def as_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def tiny_model(seed=0):
    torch.manual_seed(seed)
    model = TransformerCaptioner(vocab_size=len(VOCAB), **SIZES).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def write_original(path, model, monkeypatch, options=OPTIONS, vocab=VOCAB, opt_bytes=None):
    state = OrderedDict(model.state_dict())
    state["_vocab"] = as_tensor(pickle.dumps(vocab, protocol=3))
    state["_opt"] = as_tensor(opt_bytes if opt_bytes is not None else pickled_options(options, monkeypatch))
    ckpt = {
        "epoch": 25, "global_step": 1234, "pytorch-lightning_version": "1.0.0",
        "callbacks": {ModelCheckpoint: {"monitor": "val/CIDEr", "best_model_score": torch.tensor(1.13),
                                        "best_model_path": "save/run/run-run.ckpt"}},
        "optimizer_states": [{"state": {0: {"step": 3, "exp_avg": torch.zeros(4)}},
                              "param_groups": [{"lr": 5e-6, "params": [0]}], "_step": 3}],
        "lr_schedulers": [],
        "state_dict": state,
        "untrusted": Trap(),
    }
    with monkeypatch.context() as m:
        m.setattr(sys.modules["__main__"], "ModelCheckpoint", ModelCheckpoint, raising=False)
        torch.save(ckpt, path)


def model_from_config(config):
    return TransformerCaptioner(vocab_size=len(VOCAB), att_feat_size=config["att_feat_size"],
                                d_model=config["d_model"], d_ff=config["d_ff"], n_enc=config["N_enc"],
                                n_dec=config["N_dec"], num_heads=config["num_att_heads"], dropout=config["dropout"],
                                drop_prob_lm=config["drop_prob_lm"], max_length=config["max_length"]).eval()


@pytest.fixture()
def original(tmp_path, monkeypatch):
    TRAPPED.clear()
    model = tiny_model()
    path = tmp_path / "run-last.ckpt"
    write_original(path, model, monkeypatch)
    return path, model


def test_plain_torch_load_refuses_the_original_file(original):
    with pytest.raises(pickle.UnpicklingError):
        torch.load(original[0], weights_only=True)


def test_original_decodes_exactly_like_the_same_weights(original):
    path, direct = original
    state, vocab, config = read_captioner_checkpoint(path)
    assert TRAPPED == []
    assert vocab == VOCAB
    for key, value in dict(N_enc=2, N_dec=1, d_model=16, d_ff=24, num_att_heads=4, att_feat_size=10,
                           drop_prob_lm=0.3, max_length=7, id="run").items():
        assert config[key] == value, key
    converted = model_from_config(config)
    converted.load_state_dict(state, strict=True)
    feats = torch.randn(3, 5, 10, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = sample(converted, feats, None, method="greedy", max_length=config["max_length"])
        ref = sample(direct, feats, None, method="greedy", max_length=7)
    assert torch.equal(ours.seq, ref.seq)
    assert torch.equal(ours.logprobs, ref.logprobs)
    assert decode_sequence(vocab, ours.seq) == decode_sequence(VOCAB, ref.seq)


def test_untrusted_objects_are_neutralised_not_run(original):
    ckpt = load_lightning_checkpoint(original[0])
    assert TRAPPED == []
    assert isinstance(ckpt["untrusted"], Neutralised)
    (callback_key,) = ckpt["callbacks"]
    assert issubclass(callback_key, Neutralised) and callback_key.source == "__main__.ModelCheckpoint"
    assert ckpt["callbacks"][callback_key]["best_model_score"].item() == pytest.approx(1.13)
    assert ckpt["epoch"] == 25


def test_converted_file_is_our_format(original, tmp_path):
    path, direct = original
    dst = tmp_path / "converted.ckpt"
    convert_captioner_checkpoint(path, dst)
    ckpt = torch.load(dst, weights_only=True)  # no foreign globals left
    assert ckpt["hyper_parameters"]["vocab"] == VOCAB
    cfg = config_from_dict(ckpt["hyper_parameters"]["config"])
    assert (cfg.model.N_enc, cfg.model.d_ff, cfg.model.max_length) == (2, 24, 7)
    expected = {f"model.{k}": v for k, v in direct.state_dict().items()}
    assert list(ckpt["state_dict"]) == list(expected)
    assert all(torch.equal(ckpt["state_dict"][k], v) for k, v in expected.items())
    state, vocab, config = read_captioner_checkpoint(dst)
    assert vocab == VOCAB and config == ckpt["hyper_parameters"]["config"]
    assert all(torch.equal(state[k], v) for k, v in direct.state_dict().items())


def test_converted_file_loads_into_the_training_module(original, tmp_path):
    from captioning.training.module import CaptionerModule, load_weights

    dst = tmp_path / "converted.ckpt"
    convert_captioner_checkpoint(original[0], dst)
    _, vocab, config = read_captioner_checkpoint(dst)
    module = CaptionerModule(config, vocab)
    load_weights(module, dst)
    for k, v in original[1].state_dict().items():
        assert torch.equal(module.model.state_dict()[k], v), k


def test_options_outside_model_and_decoding_keep_our_defaults(original):
    _, _, config = read_captioner_checkpoint(original[0])
    defaults = Config().to_flat_dict()
    # the original stored grad_clip_mode 'value' (Lightning clipped by norm regardless) and a file prefix
    for key in ("grad_clip_mode", "checkpoint_path", "start_from", "use_clipscore", "num_layers", "rnn_size"):
        assert config[key] == defaults[key], key
    assert set(config) == set(defaults)


def test_model_sizes_fall_back_like_the_original(tmp_path, monkeypatch):
    opts = {k: v for k, v in OPTIONS.items() if k not in ("N_enc", "N_dec", "d_model", "d_ff", "num_att_heads",
                                                           "dropout", "max_length")}
    opts.update(num_layers=1, input_encoding_size=16, rnn_size=24, seq_length=5)
    torch.manual_seed(0)
    model = TransformerCaptioner(vocab_size=len(VOCAB), att_feat_size=10, d_model=16, d_ff=24, n_enc=1, n_dec=1,
                                 num_heads=8, max_length=20).eval()
    write_original(tmp_path / "a.ckpt", model, monkeypatch, options=opts)
    _, _, config = read_captioner_checkpoint(tmp_path / "a.ckpt")
    assert (config["N_enc"], config["N_dec"], config["d_model"], config["d_ff"]) == (1, 1, 16, 24)
    assert (config["num_att_heads"], config["dropout"], config["max_length"]) == (8, 0.1, 20)


def test_foreign_class_in_opt_is_refused(tmp_path, monkeypatch):
    TRAPPED.clear()
    with pytest.raises(ValueError, match="refusing to unpickle argparse.Namespace"):
        unpickle_options(pickle.dumps(argparse.Namespace(**OPTIONS), protocol=3))
    nested = pickled_options(OPTIONS, monkeypatch, extra={"hook": Trap()})
    with pytest.raises(ValueError, match="refusing to unpickle .*_trap"):
        unpickle_options(nested)
    write_original(tmp_path / "bad.ckpt", tiny_model(), monkeypatch, opt_bytes=nested)
    with pytest.raises(ValueError, match="refusing"):
        read_captioner_checkpoint(tmp_path / "bad.ckpt")
    assert TRAPPED == []
    assert unpickle_options(pickled_options({"a": {1, 2}, "b": [1.5, None]}, monkeypatch)) == {"a": {1, 2},
                                                                                                "b": [1.5, None]}


def test_blocked_module_global_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return os.system, ("true",)

    torch.save({"state_dict": {}, "evil": Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(ValueError, match="refused"):
        load_lightning_checkpoint(tmp_path / "evil.ckpt")


def test_options_and_weights_must_agree(tmp_path, monkeypatch):
    write_original(tmp_path / "a.ckpt", tiny_model(), monkeypatch, options={**OPTIONS, "d_ff": 32})
    with pytest.raises(ValueError, match="d_ff is 32 in the options but 24 in the weights"):
        read_captioner_checkpoint(tmp_path / "a.ckpt")
    write_original(tmp_path / "b.ckpt", tiny_model(), monkeypatch, vocab={**VOCAB, "10": "extra"})
    with pytest.raises(ValueError, match="10 words but the weights have 10 output classes"):
        read_captioner_checkpoint(tmp_path / "b.ckpt")
    write_original(tmp_path / "c.ckpt", tiny_model(), monkeypatch, options={**OPTIONS, "caption_model": "updown"})
    with pytest.raises(ValueError, match="only 'transformer'"):
        read_captioner_checkpoint(tmp_path / "c.ckpt")


def test_our_checkpoint_round_trips(tmp_path):
    model = tiny_model(1)
    config = {**Config().to_flat_dict(), "d_model": 16}
    save_captioner_checkpoint(tmp_path / "ours.ckpt", model.state_dict(), VOCAB, config)
    state, vocab, cfg = read_captioner_checkpoint(tmp_path / "ours.ckpt")
    assert vocab == VOCAB and cfg == config
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    torch.save({"state_dict": {"x": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="neither an original captioner checkpoint"):
        read_captioner_checkpoint(tmp_path / "other.ckpt")


def test_convert_tool(original, tmp_path, capsys):
    main = runpy.run_path(CONVERT_TOOL)["main"]
    assert main(["captioner", str(original[0]), str(tmp_path / "out.ckpt")]) == 0
    assert "9 words" in capsys.readouterr().out
    assert torch.load(tmp_path / "out.ckpt", weights_only=True)["hyper_parameters"]["vocab"] == VOCAB
    assert main(["captioner", str(tmp_path / "missing.ckpt"), str(tmp_path / "x.ckpt")]) == 2
    assert "not found" in capsys.readouterr().err
