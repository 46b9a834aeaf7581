"""The paper's claims on a constructed results table: each rule passes, and fails when its numbers say so."""
import copy
import math

import pytest

from captioning.evaluation.claims import ROLES, check_claims, claims_markdown

# The README's FineShapes table (fractions where the report keeps fractions).
TABLE = {
    "MLE": dict(Bleu_4=0.507, CIDEr=1.386, **{"CLIP-S": 0.701, "RefCLIP-S": 0.926, "R@1": 1.8}, parse_rate=1.0,
                grammar=0.472, background=0.0, object=35.6, relation=26.2, recall_all=0.243),
    "CIDEr": dict(Bleu_4=0.583, CIDEr=1.633, **{"CLIP-S": 0.636, "RefCLIP-S": 0.886, "R@1": 1.2}, parse_rate=1.0,
                  grammar=0.567, background=0.0, object=31.4, relation=23.2, recall_all=0.223),
    "CLIP-S": dict(Bleu_4=0.389, CIDEr=1.123, **{"CLIP-S": 1.372, "RefCLIP-S": 1.505, "R@1": 17.2},
                   parse_rate=0.956, grammar=0.286, background=67.6, object=50.5, relation=46.7, recall_all=0.459),
    "CLIP-S+CIDEr": dict(Bleu_4=0.465, CIDEr=1.365, **{"CLIP-S": 1.307, "RefCLIP-S": 1.502, "R@1": 11.6},
                         parse_rate=0.998, grammar=0.427, background=97.4, object=44.6, relation=44.4, recall_all=0.434),
    "CLIP-S+Grammar": dict(Bleu_4=0.504, CIDEr=1.529, **{"CLIP-S": 1.219, "RefCLIP-S": 1.440, "R@1": 8.2},
                           parse_rate=1.0, grammar=0.544, background=99.4, object=39.9, relation=41.8,
                           recall_all=0.392),
}

# One change per claim that breaks it (label, key, new value).
BREAKS = [
    ("MLE", "Bleu_4", 0.60),               # (a) MLE beats CIDEr on BLEU-4
    ("MLE", "RefCLIP-S", 1.6),             # (b) MLE has the best RefCLIP-S
    ("CIDEr", "relation", 47.0),           # (c) CIDEr states more true relations
    ("CLIP-S", "parse_rate", 1.0),         # (d) CLIP-S parses as well as MLE
    ("CLIP-S+Grammar", "recall_all", 0.3),  # (e) keeps only (0.3-0.223)/(0.459-0.223) = 33 % of the gain
    ("CLIP-S+CIDEr", "R@1", 0.5),          # (f) below both on R@1
]


def test_the_readme_table_passes_every_claim():
    checks = check_claims(TABLE)
    assert len(checks) == 6 and all(c.passed is True for c in checks), [c.evidence for c in checks]
    assert claims_markdown(checks).count("| pass |") == 6


@pytest.mark.parametrize("k", range(6))
def test_each_claim_fails_on_its_counterexample_only(k):
    label, key, value = BREAKS[k]
    rows = copy.deepcopy(TABLE)
    rows[label][key] = value
    passed = [c.passed for c in check_claims(rows)]
    assert passed == [i != k for i in range(6)], passed


def test_fluency_restored_needs_both_measures_and_missing_numbers_are_not_judged():
    rows = copy.deepcopy(TABLE)
    rows["CLIP-S+Grammar"]["grammar"] = 0.47  # just below MLE's 0.472
    assert [c.passed for c in check_claims(rows)][4] is False
    rows = copy.deepcopy(TABLE)
    rows["CIDEr"]["R@1"] = math.nan       # no retrieval for the CIDEr run
    del rows["MLE"]["grammar"]
    passed = [c.passed for c in check_claims(rows)]
    assert passed == [True, None, True, None, None, None]
    assert set(ROLES) == set(TABLE)
