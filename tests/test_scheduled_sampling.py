"""Scheduled sampling (issue 14, item 6): the original's ss_prob schedule and its mixing rule."""
import pytest
import torch

from captioning.models import TransformerCaptioner
from captioning.training.scheduled_sampling import ss_prob, teacher_forcing_with_sampling


@pytest.mark.parametrize("epoch,start,every,inc,cap,expected", [
    # worked by hand from the original's rule: 0 until epoch > start, then inc * floor((epoch - start) / every)
    (0, -1, 5, 0.05, 0.25, 0.0), (40, -1, 5, 0.05, 0.25, 0.0),           # start -1: off
    (0, 0, 5, 0.05, 0.25, 0.0), (4, 0, 5, 0.05, 0.25, 0.0), (5, 0, 5, 0.05, 0.25, 0.05),
    (9, 0, 5, 0.05, 0.25, 0.05), (10, 0, 5, 0.05, 0.25, 0.10), (30, 0, 5, 0.05, 0.25, 0.25),   # 0.30 capped
    (2, 2, 1, 0.1, 1.0, 0.0), (3, 2, 1, 0.1, 1.0, 0.1), (4, 2, 1, 0.1, 1.0, 0.2),
])
def test_schedule_follows_the_original_rule(epoch, start, every, inc, cap, expected):
    assert ss_prob(epoch, start, every, inc, cap) == pytest.approx(expected)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TransformerCaptioner(vocab_size=12, att_feat_size=6, d_model=16, d_ff=32, n_enc=1, n_dec=2,
                                num_heads=2, max_length=8).eval()


def _captions(b: int, s: int, t: int, ended_at: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    seq = torch.randint(1, 13, (b * s, t), generator=g)
    seq[:, 0] = 0                                             # BOS
    if ended_at is not None:
        seq[:, ended_at:] = 0
    return seq


def test_without_sampling_it_is_teacher_forcing(model):
    att = torch.randn(3, 4, 6)
    seq = _captions(3, 2, 7)
    out, fed = teacher_forcing_with_sampling(model, att, None, seq, prob=0.0)
    assert torch.equal(fed, seq)
    torch.testing.assert_close(out, model(att, None, seq), atol=1e-5, rtol=1e-5)


def test_positions_after_every_caption_ended_are_not_decoded(model):
    att = torch.randn(3, 4, 6)
    seq = _captions(3, 2, 7, ended_at=5)
    out, _ = teacher_forcing_with_sampling(model, att, None, seq, prob=0.0)
    torch.testing.assert_close(out[:, :5], model(att, None, seq)[:, :5], atol=1e-5, rtol=1e-5)
    assert (out[:, 5:] == 0).all()


def test_sampled_inputs_come_from_the_previous_prediction(model):
    with torch.no_grad():
        model.model.generator.proj.bias[7] = 1e4              # every prediction is word 7
    att = torch.randn(3, 4, 6)
    seq = _captions(3, 2, 7)
    _, fed = teacher_forcing_with_sampling(model, att, None, seq, prob=1.0)
    assert (fed[:, 0] == 0).all() and (fed[:, 1:] == 7).all()
    _, fed = teacher_forcing_with_sampling(model, att, None, seq, prob=0.0)
    assert torch.equal(fed, seq)


def test_each_input_is_replaced_with_probability_ss_prob(model):
    with torch.no_grad():
        model.model.generator.proj.bias[0] = 1e4              # predictions (0) differ from every label (>= 1)
    att = torch.randn(100, 4, 6)
    seq = _captions(100, 5, 4)
    _, fed = teacher_forcing_with_sampling(model, att, None, seq, prob=0.3,
                                           generator=torch.Generator().manual_seed(0))
    replaced = (fed[:, 1:] != seq[:, 1:]).float().mean().item()
    assert abs(replaced - 0.3) < 0.03                          # 1500 draws: sd 0.012


def test_training_logs_the_epochs_probability(tiny_world_factory, tmp_path, monkeypatch):
    import csv

    from captioning.training import run as train_pl

    _, cfg = tiny_world_factory(n_train=30)
    monkeypatch.chdir(tmp_path)
    assert train_pl.main(["--cfg", str(cfg), "--id", "ss", "--checkpoint_path", "save", "--max_epochs", "3",
                          "--losses_log_every", "1", "--scheduled_sampling_start", "0",
                          "--scheduled_sampling_increase_every", "1", "--scheduled_sampling_increase_prob", "0.4",
                          "--scheduled_sampling_max_prob", "0.5"]) == 0
    with open(tmp_path / "save/logs/version_0/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/scheduled_sampling_prob")]
    by_epoch = {int(r["epoch"]): float(r["train/scheduled_sampling_prob"]) for r in rows}
    assert by_epoch == pytest.approx({0: 0.0, 1: 0.4, 2: 0.5})
