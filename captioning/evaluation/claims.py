"""The paper's claims, each checked on a results table (rows by model label, keys as in the report).

The five rows are named by the reward they were trained with: ``MLE``, ``CIDEr``, ``CLIP-S``,
``CLIP-S+CIDEr`` and ``CLIP-S+Grammar`` (the demo's labels; label COCO runs the same way). A claim
whose numbers are missing (None or NaN) is neither passed nor failed (``passed`` None).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

ROLES = ("MLE", "CIDEr", "CLIP-S", "CLIP-S+CIDEr", "CLIP-S+Grammar")
DETAIL_KEEP = 0.5  # "most of the detail gain": at least this share of CLIP-S's truth-recall gain over CIDEr


@dataclass(frozen=True)
class ClaimCheck:
    claim: str
    passed: bool | None
    evidence: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Missing(Exception):
    pass


def _get(rows: dict[str, dict], label: str, key: str) -> float:
    value = rows.get(label, {}).get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise _Missing(f"{label} {key}")
    return float(value)


def _highest(rows: dict[str, dict], label: str, keys: tuple[str, ...]) -> tuple[bool, str]:
    ok, parts = True, []
    for key in keys:
        values = {lab: _get(rows, lab, key) for lab in ROLES}
        best = max(values, key=values.get)
        ok &= values[label] >= max(values.values())
        parts.append(f"{key}: {label} {values[label]:.4g}, best {best} {values[best]:.4g}")
    return ok, "; ".join(parts)


def _claim_a(rows: dict[str, dict]) -> tuple[bool, str]:
    return _highest(rows, "CIDEr", ("CIDEr", "Bleu_4"))


def _claim_b(rows: dict[str, dict]) -> tuple[bool, str]:
    return _highest(rows, "CLIP-S", ("CLIP-S", "RefCLIP-S", "R@1"))


def _claim_c(rows: dict[str, dict]) -> tuple[bool, str]:
    keys = ("recall_all", "background", "object", "relation")
    pairs = {k: (_get(rows, "CLIP-S", k), _get(rows, "CIDEr", k)) for k in keys}
    return (all(a > b for a, b in pairs.values()),
            "; ".join(f"{k}: CLIP-S {a:.4g} vs CIDEr {b:.4g}" for k, (a, b) in pairs.items()))


def _claim_d(rows: dict[str, dict]) -> tuple[bool, str]:
    pairs = {k: (_get(rows, "CLIP-S", k), _get(rows, "MLE", k)) for k in ("parse_rate", "grammar")}
    return (all(a < b for a, b in pairs.values()),
            "; ".join(f"{k}: CLIP-S {a:.4g} vs MLE {b:.4g}" for k, (a, b) in pairs.items()))


def _claim_e(rows: dict[str, dict]) -> tuple[bool, str]:
    fluent = {k: (_get(rows, "CLIP-S+Grammar", k), _get(rows, "MLE", k)) for k in ("parse_rate", "grammar")}
    gain = _get(rows, "CLIP-S", "recall_all") - _get(rows, "CIDEr", "recall_all")
    kept = _get(rows, "CLIP-S+Grammar", "recall_all") - _get(rows, "CIDEr", "recall_all")
    share = kept / gain if gain > 0 else float("nan")
    ok = all(a >= b for a, b in fluent.values()) and gain > 0 and share >= DETAIL_KEEP
    evidence = "; ".join(f"{k}: CLIP-S+Grammar {a:.4g} vs MLE {b:.4g}" for k, (a, b) in fluent.items())
    return ok, f"{evidence}; truth-recall gain over CIDEr kept: {share:.0%} (needs {DETAIL_KEEP:.0%})"


def _claim_f(rows: dict[str, dict]) -> tuple[bool, str]:
    ok, parts = True, []
    for key in ("CIDEr", "R@1"):
        x, lo, hi = (_get(rows, lab, key) for lab in ("CLIP-S+CIDEr", "CIDEr", "CLIP-S"))
        ok &= min(lo, hi) <= x <= max(lo, hi)
        parts.append(f"{key}: CIDEr {lo:.4g}, CLIP-S+CIDEr {x:.4g}, CLIP-S {hi:.4g}")
    return ok, "; ".join(parts)


CLAIMS: tuple[tuple[str, Callable[[dict[str, dict]], tuple[bool, str]]], ...] = (
    ("(a) the CIDEr reward gives the highest CIDEr and BLEU-4", _claim_a),
    ("(b) the CLIP-S reward gives the highest CLIP-S, RefCLIP-S and R@1", _claim_b),
    ("(c) the CLIP-S reward states more true details than the CIDEr reward (truth recall; FineShapesEval "
     "background, object, relation)", _claim_c),
    ("(d) the CLIP-S reward is less fluent than MLE (parse rate and grammar score)", _claim_d),
    ("(e) adding the grammar reward restores fluency to at least MLE's level and keeps most of the detail gain "
     "over the CIDEr reward", _claim_e),
    ("(f) CLIP-S+CIDEr lies between the CIDEr and the CLIP-S reward on CIDEr and on R@1", _claim_f),
)


def check_claims(rows: dict[str, dict]) -> list[ClaimCheck]:
    """Every claim, computed from ``rows``; one whose numbers are missing has ``passed`` None."""
    out = []
    for claim, rule in CLAIMS:
        try:
            passed, evidence = rule(rows)
        except _Missing as e:
            passed, evidence = None, f"not computable: no {e}"
        out.append(ClaimCheck(claim, bool(passed) if passed is not None else None, evidence))
    return out


def claims_markdown(checks: list[ClaimCheck]) -> str:
    body = [f"| {c.claim} | {c.evidence} | {'pass' if c.passed else 'FAIL' if c.passed is False else 'n/a'} |"
            for c in checks]
    return "\n".join(["| claim | evidence | result |", "|---|---|---|", *body])
