import json
import math
import shutil
import subprocess

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from captioning.metrics import language
from captioning.metrics.language import (
    LanguageEvaluator,
    merge_metrics,
    refs_from_coco,
    refs_from_karpathy,
    simple_tokenize,
    write_eval_results,
)

REFS = {
    1: ["A man riding a horse.", "A person on a brown horse!"],
    2: ["Two dogs can't stop playing in the well-kept grass.", "Dogs playing, outside"],
    3: ["A woman's red umbrella.", "a red umbrella in the rain"],
}
PREDS = [
    {"image_id": 1, "caption": "a man on a horse"},
    {"image_id": 2, "caption": "two dogs playing in the"},
    {"image_id": 3, "caption": "a red umbrella"},
]
NON_JAVA = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr")


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(language, "_WARNED", set())


@pytest.fixture
def no_spice_jars(monkeypatch, tmp_path):
    monkeypatch.setattr(language, "SPICE_CORENLP_JARS", (tmp_path / "stanford-corenlp-3.6.0.jar",))


def _reference_scores(gts, res):
    """BLEU, ROUGE-L and CIDEr from calling the pycocoevalcap scorers directly."""
    out = {}
    score, scores = Bleu(4).compute_score(gts, res, verbose=0)
    for k in range(4):
        out[f"Bleu_{k + 1}"] = (score[k], scores[k])
    out["ROUGE_L"] = Rouge().compute_score(gts, res)
    out["CIDEr"] = Cider().compute_score(gts, res)
    return out


@pytest.mark.skipif(shutil.which("java") is None, reason="needs Java")
@pytest.mark.slow
def test_matches_pycocoevalcap_and_reuses_meteor(no_spice_jars):
    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": r} for r in refs] for i, refs in REFS.items()})
    res = tok.tokenize({p["image_id"]: [{"caption": p["caption"]}] for p in PREDS})
    expected = _reference_scores(gts, res)

    with LanguageEvaluator() as ev:
        with pytest.warns(UserWarning, match="SPICE skipped"):
            result = ev.evaluate(PREDS, REFS)
        meteor = ev._meteor
        again = ev.evaluate(PREDS, REFS, spice=False)
        assert ev._meteor is meteor and meteor.meteor_p.poll() is None  # same JVM, still running
        # pycocoevalcap's own METEOR scorer on the independently tokenised text (one JVM start saved)
        expected["METEOR"] = Meteor.compute_score(meteor, gts, res)
    assert meteor.meteor_p.poll() is not None  # closed on exit

    assert result["tokenizer"] == "ptb"  # PTB keeps "well-kept" and splits "ca n't"
    assert "SPICE" not in result["overall"] and "stanford-corenlp" in result["skipped"]["SPICE"]
    for name, (score, scores) in expected.items():
        assert result["overall"][name] == pytest.approx(score, abs=1e-12)
        assert again["overall"][name] == pytest.approx(score, abs=1e-12)
        for image_id, s in zip(gts, scores):
            assert result["imgToEval"][image_id][name] == pytest.approx(s, abs=1e-12)
    assert result["imgToEval"][2]["caption"] == "two dogs playing in the"
    assert result["overall"]["bad_count_rate"] == pytest.approx(1 / 3)


def test_java_absent_uses_simple_tokenizer(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)

    def no_process(*args, **kwargs):
        raise AssertionError("no subprocess may be started without Java")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    with pytest.warns(UserWarning, match="Java not found"):
        result = LanguageEvaluator().evaluate(PREDS, REFS)

    assert result["tokenizer"] == "simple"
    assert set(result["skipped"]) == {"METEOR", "SPICE"}
    assert "METEOR" not in result["overall"] and "METEOR" not in result["imgToEval"][1]
    # hand-tokenised: lowercase, punctuation gone, "'s" split off
    gts = {
        1: ["a man riding a horse", "a person on a brown horse"],
        2: ["two dogs can 't stop playing in the well kept grass", "dogs playing outside"],
        3: ["a woman 's red umbrella", "a red umbrella in the rain"],
    }
    res = {p["image_id"]: [p["caption"]] for p in PREDS}
    expected = _reference_scores(gts, res)
    for name in NON_JAVA:
        assert result["overall"][name] == pytest.approx(expected[name][0], abs=1e-12)
    assert simple_tokenize("Hello, World! It's 'quoted'") == "hello world it 's quoted"


def _stub_meteor(monkeypatch):
    monkeypatch.setattr(LanguageEvaluator, "_meteor_score", lambda self, gts, res: (0.5, [0.5] * len(res)))


@pytest.mark.skipif(shutil.which("java") is None, reason="needs Java for the PTB tokenizer")
def test_spice_absent_warns_once_and_is_reported(monkeypatch, no_spice_jars, recwarn):
    _stub_meteor(monkeypatch)
    ev = LanguageEvaluator()
    first = ev.evaluate(PREDS, REFS)
    second = ev.evaluate(PREDS, REFS)
    assert len([w for w in recwarn if "SPICE skipped" in str(w.message)]) == 1
    for result in (first, second):
        assert "SPICE" not in result["overall"] and "SPICE" not in result["imgToEval"][1]
        assert "stanford-corenlp-3.6.0.jar" in result["skipped"]["SPICE"]
        assert result["overall"]["METEOR"] == 0.5


@pytest.mark.skipif(shutil.which("java") is None, reason="needs Java for the PTB tokenizer")
def test_spice_aggregation_and_failure(monkeypatch):
    _stub_meteor(monkeypatch)
    monkeypatch.setattr(language, "missing_spice_jars", lambda: [])
    fake = {
        1: {"All": {"f": 0.2}, "Object": {"f": 0.5}, "Color": {"f": math.nan}},
        2: {"All": {"f": 0.4}, "Object": {"f": 0.1}, "Color": {"f": 1.0}},
        3: {"All": {"f": 0.0}, "Object": {"f": 0.0}, "Color": {"f": math.nan}},
    }
    monkeypatch.setattr(language, "run_spice", lambda gts, res, timeout: fake)
    result = LanguageEvaluator().evaluate(PREDS, REFS)
    assert result["overall"]["SPICE"] == pytest.approx(0.2)
    assert result["overall"]["SPICE_Object"] == pytest.approx(0.2)
    assert result["overall"]["SPICE_Color"] == pytest.approx(1.0)  # NaN skipped
    assert result["imgToEval"][2]["SPICE"] == fake[2]

    def broken(gts, res, timeout):
        raise RuntimeError("SPICE exited with 1: boom")

    monkeypatch.setattr(language, "run_spice", broken)
    with pytest.warns(UserWarning, match="boom"):
        result = LanguageEvaluator().evaluate(PREDS, REFS)
    assert "SPICE" not in result["overall"] and "boom" in result["skipped"]["SPICE"]


def test_bad_predictions_raise():
    ev = LanguageEvaluator()
    with pytest.raises(ValueError, match="two different"):
        ev.evaluate(PREDS + [{"image_id": 1, "caption": "another"}], REFS)
    with pytest.raises(ValueError, match="no references"):
        ev.evaluate([{"image_id": 9, "caption": "a cat"}], REFS)
    with pytest.raises(ValueError, match="no predictions"):
        ev.evaluate([], REFS)


def test_reference_readers(tmp_path):
    karpathy = {
        "images": [
            {"cocoid": 5, "imgid": 0, "split": "test", "sentences": [{"raw": " A cat. "}, {"raw": "cat"}]},
            {"cocoid": 6, "imgid": 1, "split": "restval", "sentences": [{"raw": "dog"}]},
            {"imgid": 2, "split": "train", "sentences": [{"raw": "bird"}]},
            {"cocoid": 8, "imgid": 3, "sentences": [{"raw": "fish"}]},
        ]
    }
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(karpathy))
    assert refs_from_karpathy(path, "test") == {5: ["A cat.", "cat"], 8: ["fish"]}
    assert refs_from_karpathy(path, "train") == {6: ["dog"], 2: ["bird"], 8: ["fish"]}
    with pytest.raises(ValueError, match="no images"):
        refs_from_karpathy(_write(tmp_path / "empty.json", {"images": []}), "val")
    coco = {"annotations": [{"image_id": i, "caption": c} for i, c in ((3, "x"), (4, "y"), (3, "z"))]}
    assert refs_from_coco(_write(tmp_path / "coco.json", coco)) == {3: ["x", "z"], 4: ["y"]}


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_write_eval_results_merges_and_writes(tmp_path):
    result = {
        "overall": {"CIDEr": 1.0, "SPICE_Color": math.nan},
        "imgToEval": {i: {"image_id": i, "CIDEr": 1.0, "caption": c} for i, c in ((1, "a"), (2, "b"))},
        "tokenizer": "ptb",
        "skipped": {},
    }
    path = write_eval_results(
        result, "run", "test", tmp_path / "eval_results", overall={"CLIP-S": 0.7}, per_image={1: {"CLIP-S": 0.6}}
    )
    assert path == tmp_path / "eval_results" / "run_test.json"
    written = json.loads(path.read_text())
    assert written["overall"] == {"CIDEr": 1.0, "SPICE_Color": None, "CLIP-S": 0.7}
    assert written["imgToEval"]["1"] == {"image_id": 1, "CIDEr": 1.0, "caption": "a", "CLIP-S": 0.6}
    assert "CLIP-S" not in result["imgToEval"][1]  # the input is not modified
    assert [p.name for p in path.parent.iterdir()] == ["run_test.json"]  # no temp file left
    with pytest.raises(ValueError, match="unknown image id"):
        merge_metrics(result, per_image={"1": {"CLIP-S": 0.6}})


@pytest.mark.skipif(shutil.which("java") is None, reason="needs Java for the PTB tokenizer")
def test_line_breaks_inside_captions_do_not_shift_ptb_lines(monkeypatch, no_spice_jars):
    # pycocoevalcap's PTBTokenizer alone turns "a\rb" into two lines and misaligns later captions.
    _stub_meteor(monkeypatch)
    broken = [dict(p, caption=p["caption"].replace(" ", "\r", 1)) for p in PREDS]
    refs = {i: [r.replace(" ", "\u2028", 1) for r in rs] for i, rs in REFS.items()}
    ev = LanguageEvaluator()
    clean = ev.evaluate(PREDS, REFS, spice=False)["overall"]
    assert ev.evaluate(broken, refs, spice=False)["overall"] == pytest.approx(clean)
