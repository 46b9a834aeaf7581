"""The spread of a results table over seeds: mean ± sd per cell and, per claim, in how many seeds it held.

Input: one results table per seed (``{row label: {key: number}}``, as in ``report.json``). The sd is
the sample standard deviation (n - 1); a cell missing (None or NaN) in some seeds is averaged over
the seeds that have it, and its ``n`` says how many.
"""
from __future__ import annotations

import math
from typing import Any

from captioning.evaluation.claims import CLAIMS, check_claims


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)


def cell_stats(values: list[float]) -> dict[str, Any]:
    """Mean, sample sd (None for fewer than two values) and count of the values."""
    n = len(values)
    mean = sum(values) / n if n else None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "sd": sd, "n": n, "values": values}


def aggregate(tables: list[dict[str, dict]], seeds: list[int] | None = None) -> dict[str, Any]:
    """Mean ± sd of every numeric cell over the tables, and per claim how many seeds it held in."""
    if not tables:
        raise ValueError("no results tables to aggregate")
    seeds = list(range(len(tables))) if seeds is None else seeds
    labels = [label for label in tables[0] if isinstance(tables[0][label], dict)]
    rows: dict[str, dict[str, Any]] = {}
    for label in labels:
        keys = dict.fromkeys(k for t in tables for k in t.get(label, {}))
        rows[label] = {}
        for key in keys:
            values = [_number(t.get(label, {}).get(key)) for t in tables]
            if any(v is not None for v in values):
                rows[label][key] = cell_stats([v for v in values if v is not None])
    per_seed = [check_claims(t) for t in tables]
    claims = []
    for i, (claim, _) in enumerate(CLAIMS):
        results = [checks[i].passed for checks in per_seed]
        claims.append({"claim": claim, "held": sum(r is True for r in results),
                       "computable": sum(r is not None for r in results), "per_seed": results})
    return {"n_seeds": len(tables), "seeds": seeds, "rows": rows, "claims": claims}


def _cell(stats: dict[str, Any] | None, scale: float, fmt: str) -> str:
    if not stats:
        return "–"
    text = fmt.format(stats["mean"] * scale)
    return text + (f" ± {fmt.format(stats['sd'] * scale)}" if stats["sd"] is not None else "")


def spread_markdown(agg: dict[str, Any], columns: list[tuple[str, str, float, str]]) -> str:
    """The mean ± sd table (``columns`` as the report's) and the per-claim count of seeds."""
    head = "| model | " + " | ".join(c[0] for c in columns) + " |"
    sep = "|---|" + "---:|" * len(columns)
    body = ["| " + label + " | " + " | ".join(_cell(cells.get(key), scale, fmt) for _, key, scale, fmt in columns)
            + " |" for label, cells in agg["rows"].items()]
    claim_rows = []
    for c in agg["claims"]:
        failed = [str(s) for s, r in zip(agg["seeds"], c["per_seed"]) if r is False]
        note = f"; failed in seed {', '.join(failed)}" if failed else ""
        missing = "" if c["computable"] == agg["n_seeds"] else f" ({c['computable']} computable)"
        claim_rows.append(f"| {c['claim']} | {c['held']} of {agg['n_seeds']}{missing}{note} |")
    return "\n".join([head, sep, *body, "", "| claim | held in seeds |", "|---|---|", *claim_rows])
