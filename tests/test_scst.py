"""Self-critical training: the SCST step on a tiny problem, the optimiser hand-over and
tools/train_pl.py phase 2 end to end (CIDEr-D, CLIP-S + grammar) on a tiny FineShapes world."""
import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import clip
from captioning.config import Config, load_config
from captioning.data.features import write_packed
from captioning.data.prepro import prepro_ngrams
from captioning.models import sample
from captioning.training import run as train_pl
from captioning.training.module import CaptionerModule
from captioning.training.optim import build_optimizer
from captioning.utils.io import write_pickle
from cider import CiderD, document_frequency
from clip.grammar import GrammarCLIP
from retrieval.export import save_grammar_clip


def mean_sample_cider(module, feats, refs, n=10):
    """Mean CIDEr-D of n sampled captions per image (index strings), with a fixed generator."""
    scorer = CiderD(df={"document_frequency": document_frequency(refs)[0], "ref_len": len(refs)})
    module.model.eval()
    with torch.no_grad():
        seq = sample(module.model, feats, None, method="sample", sample_n=n,
                     generator=torch.Generator().manual_seed(0)).seq
    cands = []
    for row in seq.tolist():
        end = row.index(0) + 1 if 0 in row else len(row)
        cands.append(" ".join(map(str, row[:end])))
    return float(scorer.score(cands, refs, np.repeat(np.arange(len(refs)), n)).mean())


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
@pytest.mark.parametrize("baseline", ["greedy", "mean"])
def test_scst_steps_raise_the_mean_reward(tmp_path, baseline):
    vocab = {str(i): f"w{i}" for i in range(1, 9)}
    # 4 images, each with its own two references (index strings end with the EOS "0"); 4 more
    # documents in the df table give the shared words a non-zero idf
    refs = [[f"1 {2 + i} 6 0", f"1 {2 + i} 7 0"] for i in range(4)]
    df, ref_len = document_frequency(refs + [["8 8 0"]] * 4)
    write_pickle(tmp_path / "df-idxs.p", {"document_frequency": dict(df), "ref_len": ref_len})
    gts = [np.array([[int(t) for t in r.split()[:-1]] for r in rs]) for rs in refs]
    cfg = Config()
    for key, value in dict(att_feat_size=8, d_model=32, d_ff=64, N_enc=1, N_dec=1, num_att_heads=2, max_length=6,
                           self_critical_after=0, sc_baseline=baseline, cached_tokens=str(tmp_path / "df-idxs.p"),
                           noamopt=False).items():
        cfg.set(key, value)
    gains = []
    for seed in range(3):  # one run's gain depends on its dropout draws: judge the mean of three
        torch.manual_seed(seed)
        module = CaptionerModule(cfg.to_flat_dict(), vocab)
        module.setup("fit")
        feats = 3 * torch.eye(8)[:4, None].expand(4, 3, 8) + 0.1 * torch.randn(4, 3, 8)  # distinct images
        before = mean_sample_cider(module, feats, refs)
        opt = torch.optim.Adam(module.model.parameters(), lr=5e-3)
        for _ in range(40):
            module.model.train()
            loss = module.scst_loss({"att_feats": feats, "att_masks": None, "gts": gts})
            opt.zero_grad()
            loss.backward()
            opt.step()
        gains.append(mean_sample_cider(module, feats, refs) - before)
    assert min(gains) > 0 and sum(gains) / len(gains) > 1.0, gains


def test_optimizer_state_hand_over():
    params = [torch.nn.Parameter(torch.zeros(3))]
    mle = torch.optim.Adam(params, lr=1.0, betas=(0.9, 0.98), eps=1e-9)  # NoamOpt's Adam
    params[0].grad = torch.tensor([1.0, -2.0, 3.0])
    mle.step()
    state = mle.state_dict()
    cfg = load_config(overrides={"noamopt": False, "learning_rate": 5e-6})

    kept = build_optimizer(cfg, params, initial_state=state)["optimizer"]
    group = kept.param_groups[0]
    assert group["lr"] == 5e-6 and group["betas"] == (0.9, 0.98) and group["eps"] == 1e-9
    assert torch.allclose(kept.state[params[0]]["exp_avg"], 0.1 * torch.tensor([1.0, -2.0, 3.0]))
    assert int(kept.state[params[0]]["step"]) == 1

    fresh = build_optimizer(cfg, params)["optimizer"]
    group = fresh.param_groups[0]
    assert group["lr"] == 5e-6 and group["betas"] == (0.9, 0.999) and group["eps"] == 1e-8
    assert not fresh.state


@pytest.fixture(scope="module")
def phase2(tiny_world_factory, tmp_path_factory):
    """The tiny world's 1-epoch MLE checkpoint, df pickle, CLIP-S features, a tiny CLIP and grammar CLIP."""
    root, base = tiny_world_factory(n_train=30)
    here = tmp_path_factory.mktemp("scst")
    prepro_ngrams(root / "dataset.json", root / "talk.json", str(here / "ng"), "train")
    ids = [im["id"] for im in json.loads((root / "talk.json").read_text())["images"]]
    torch.manual_seed(0)
    model = clip.CLIP(**clip.tiny_clip_config("resnet")).eval()
    torch.save(model.state_dict(), here / "clip.pt")
    save_grammar_clip(GrammarCLIP(model, with_head=True), here / "grammar.pt")
    vis = np.random.default_rng(1).standard_normal((len(ids), 128)).astype(np.float32)
    write_packed(here / "vis.npy", ids, vis)
    cfg = here / "scst.yml"
    cfg.write_text(f"""_BASE_: {base}
input_clipscore_vis_dir: {here / 'vis.npy'}
cached_tokens: {here / 'ng-idxs.p'}
clip_model: {here / 'clip.pt'}
noamopt: false
learning_rate: 5.0e-6
self_critical_after: 0
losses_log_every: 1
""")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(here)
        assert train_pl.main(["--cfg", str(base), "--id", "mle", "--checkpoint_path", str(here / "save")]) == 0
    return {"dir": here, "cfg": cfg, "mle": here / "save" / "mle-last.ckpt", "ids": ids, "vis": vis, "clip": model}


def rl(ctx, run_id, *args):
    return train_pl.main(["--cfg", str(ctx["cfg"]), "--id", run_id, "--checkpoint_path", str(ctx["dir"] / run_id),
                          *args])


def logged(ctx, run_id):
    with open(ctx["dir"] / run_id / "logs" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return {k for row in rows for k, v in row.items() if v != ""}


def test_validation_every_n_steps_gives_a_curve_point_per_interval_on_limited_batches(phase2, monkeypatch):
    monkeypatch.chdir(phase2["dir"])
    assert rl(phase2, "rlv", "--init_from", str(phase2["mle"]), "--val_check_interval", "1",
              "--limit_val_batches", "1", "--batch_size", "5") == 0
    with open(phase2["dir"] / "rlv" / "logs" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    train_steps = {r["step"] for r in rows if r.get("train/loss")}
    val_steps = [r["step"] for r in rows if any(v != "" for k, v in r.items() if k.startswith("val/"))]
    assert len(train_steps) > 1 and sorted(val_steps, key=int) == sorted(train_steps, key=int)
    val = json.loads((phase2["dir"] / "eval_results" / "rlv_val.json").read_text())
    assert len(val["imgToEval"]) == 5  # one batch of the 8 val images


def adam_state(ctx, run_id):
    ckpt = torch.load(ctx["dir"] / run_id / f"{run_id}-last.ckpt", weights_only=True)
    opt = ckpt["optimizer_states"][0]
    return opt["param_groups"][0], int(opt["state"][0]["step"])


def test_phase2_cider_with_fresh_or_kept_adam(phase2, monkeypatch):
    monkeypatch.chdir(phase2["dir"])
    assert rl(phase2, "rl", "--init_from", str(phase2["mle"])) == 0
    group, step = adam_state(phase2, "rl")
    assert (group["lr"], group["betas"], group["eps"], step) == (5e-6, (0.9, 0.999), 1e-8, 3)  # 3 RL steps
    keys = logged(phase2, "rl")
    for key in ("train/reward", "train/CIDEr", "train/loss", "train/time_sample", "train/time_reward",
                "train/time_backward"):
        assert key in keys, key

    # keep_mle_optimizer_state: NoamOpt's betas / eps and the 3 MLE steps carry over; lr is phase 2's
    assert rl(phase2, "rlk", "--init_from", str(phase2["mle"]), "--keep_mle_optimizer_state") == 0
    group, step = adam_state(phase2, "rlk")
    assert (group["lr"], group["betas"], group["eps"], step) == (5e-6, (0.9, 0.98), 1e-9, 6)


def clip_s_by_hand(model, caption, image):
    tokens = clip.tokenize([f"A photo depicts {caption}"], context_length=model.context_length)
    with torch.no_grad():
        pooled = model.encode_text_pooled(tokens)
        text = F.normalize(pooled @ model.text_projection, dim=-1)[0]
    return 2.5 * max(float(text @ F.normalize(torch.as_tensor(image), dim=0)), 0.0), pooled


def test_phase2_clips_grammar_and_eval_metrics(phase2, monkeypatch):
    monkeypatch.chdir(phase2["dir"])
    args = ["--init_from", str(phase2["mle"]), "--use_clipscore", "--clipscore_reward_weight", "2.0",
            "--use_multi_rewards", "--use_grammar", "--use_grammar_baseline", "--sc_baseline", "mean",
            "--clip_load_path", str(phase2["dir"] / "grammar.pt")]
    assert rl(phase2, "rlg", *args) == 0
    keys = logged(phase2, "rlg")
    for key in ("train/reward", "train/CLIP-S", "train/grammar_reward", "val/CLIP-S", "val/RefCLIP-S",
                "val/RefCLIP-S-Hessel", "val/grammar_prob"):
        assert key in keys, key
    assert "train/CIDEr" not in keys  # CLIP-S + grammar has no CIDEr-D term

    result = json.loads((phase2["dir"] / "eval_results" / "rlg_val.json").read_text())
    head = torch.load(phase2["dir"] / "grammar.pt", weights_only=True)["state_dict"]
    row_of = {str(i): k for k, i in enumerate(phase2["ids"])}
    clip_scores = []
    for image_id, entry in result["imgToEval"].items():
        expected, pooled = clip_s_by_hand(phase2["clip"], entry["caption"], phase2["vis"][row_of[image_id]])
        assert entry["CLIP-S"] == pytest.approx(expected, abs=1e-5)
        logits = torch.relu(pooled @ head["grammar_head.0.weight"].T) @ head["grammar_head.2.weight"].T
        assert entry["grammar_prob"] == pytest.approx(float(logits.softmax(-1)[0, 1]), abs=1e-5)
        assert 0.0 <= entry["RefCLIP-S-Hessel"] <= entry["RefCLIP-S"] <= 2.5
        clip_scores.append(entry["CLIP-S"])
    assert any(s > 0 for s in clip_scores)
    assert result["overall"]["CLIP-S"] == pytest.approx(np.mean(clip_scores))

    # eval_clipscore: the same metrics when testing an MLE checkpoint, no CLIP-S reward configured
    assert train_pl.main(["--cfg", str(phase2["cfg"]), "--id", "mle", "--evaluate", "--eval_clipscore",
                          "--init_from", str(phase2["mle"])]) == 0
    overall = json.loads((phase2["dir"] / "eval_results" / "mle_test.json").read_text())["overall"]
    assert {"CLIP-S", "RefCLIP-S", "RefCLIP-S-Hessel"} <= set(overall) and "grammar_prob" not in overall


def test_phase2_start_errors(phase2, monkeypatch, capsys):
    monkeypatch.chdir(phase2["dir"])
    assert rl(phase2, "e1", "--init_from", str(phase2["dir"] / "missing.ckpt")) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert rl(phase2, "e2") == 2
    assert "random model" in capsys.readouterr().err
    assert rl(phase2, "e3", "--self_critical_after", "1", "--keep_mle_optimizer_state") == 2
    assert "needs --init_from" in capsys.readouterr().err
    with pytest.raises(ValueError, match="grammar head"):
        rl(phase2, "e4", "--init_from", str(phase2["mle"]), "--use_clipscore", "--use_multi_rewards",
           "--use_grammar")
    assert rl(phase2, "e5", "--init_from", str(phase2["mle"]), "--cached_tokens", "no-such-idxs") == 2
    assert "CIDEr-D document frequencies" in capsys.readouterr().err
