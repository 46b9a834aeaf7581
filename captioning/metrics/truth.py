"""Exact fine-grained correctness on FineShapes: which stated facts are true, which true facts are stated.

A caption is parsed (:func:`captioning.fineshapes.parse`) into mentions, relations and a
background. Its singular mentions are matched one-to-one to the scene's objects so that the
most stated attributes are true. Then, per category:

* ``object`` (the shape, or the count of a group such as "two circles"), ``color``, ``size``,
  ``relation`` and ``background`` facts that the caption states are counted as true or false
  (precision);
* the scene's facts -- every object's shape, colour and size, the relation of each object to
  the next, the background -- are counted as stated correctly or not (recall).

Dataset numbers are micro-averages over all facts; captions that do not parse state nothing
and are counted in ``parse_rate``.
"""
from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from captioning.fineshapes import Mention, Obj, Parse, Scene, parse, relation_holds

CATEGORIES = ("object", "color", "size", "relation", "background")
_ATTRS = (("object", "shape"), ("color", "color"), ("size", "size"))


def _group_true(m: Mention, scene: Scene) -> bool:
    matching = [o for o in scene.objects if all(getattr(m, a) in (None, getattr(o, a)) for _, a in _ATTRS)]
    return len(matching) == m.count


def _match(p: Parse, scene: Scene) -> dict[int, int]:
    """Mention index -> object index, one-to-one over singular mentions, maximising true attributes."""
    singles = [i for i, m in enumerate(p.mentions) if m.count == 1]
    objs = scene.objects
    best: tuple[int, dict[int, int]] = (-1, {})
    k = min(len(singles), len(objs))
    for chosen in itertools.combinations(singles, k):
        for perm in itertools.permutations(range(len(objs)), k):
            score = sum(getattr(p.mentions[i], a) == getattr(objs[j], a)
                        for i, j in zip(chosen, perm) for _, a in _ATTRS)
            if score > best[0]:
                best = (score, dict(zip(chosen, perm)))
    return best[1]


def caption_facts(caption: str, scene: Scene) -> dict[str, Any]:
    """Per category: facts stated, stated facts that are true, true facts stated; and whether it parses."""
    p = parse(caption)
    stated, true, recalled = Counter(), Counter(), Counter()
    truth = Counter({"object": len(scene.objects), "color": len(scene.objects), "size": len(scene.objects),
                     "relation": len(scene.objects) - 1, "background": 1})
    if not p.ok:
        return {"parses": False, "stated": stated, "true": true, "recalled": recalled, "truth": truth}
    match = _match(p, scene)
    recalled_attrs: set[tuple[int, str]] = set()
    for i, m in enumerate(p.mentions):
        if m.count > 1:
            ok = _group_true(m, scene)
            for cat, attr in _ATTRS:
                if getattr(m, attr) is not None or cat == "object":
                    stated[cat] += 1
                    true[cat] += ok
            if ok and m.shape is not None:
                recalled_attrs.update((j, "shape") for j, o in enumerate(scene.objects) if o.shape == m.shape)
            continue
        obj: Obj | None = scene.objects[match[i]] if i in match else None
        for cat, attr in _ATTRS:
            value = getattr(m, attr)
            if value is None:
                continue
            stated[cat] += 1
            if obj is not None and getattr(obj, attr) == value:
                true[cat] += 1
                recalled_attrs.add((match[i], attr))
    for cat, attr in _ATTRS:
        recalled[cat] = sum(1 for _, a in recalled_attrs if a == attr)
    chain = {(min(i, j), max(i, j)) for i, _, j in scene.chain_relations()}
    recalled_pairs = set()
    for a, rel, b in p.relations:
        stated["relation"] += 1
        if a in match and b in match and relation_holds(scene.objects[match[a]], scene.objects[match[b]], rel):
            true["relation"] += 1
            pair = (min(match[a], match[b]), max(match[a], match[b]))
            if rel != "next to" and pair in chain:
                recalled_pairs.add(pair)
    recalled["relation"] = len(recalled_pairs)
    if p.background is not None:
        stated["background"] += 1
        true["background"] += p.background == scene.background
        recalled["background"] = int(p.background == scene.background)
    return {"parses": True, "stated": stated, "true": true, "recalled": recalled, "truth": truth}


def truth_metrics(captions: Mapping[Any, str], scenes: Mapping[Any, Scene]) -> dict[str, float]:
    """Dataset precision and recall per category (and over all facts), parse rate, facts per caption."""
    totals = {k: Counter() for k in ("stated", "true", "recalled", "truth")}
    parses = 0
    for image_id, caption in captions.items():
        key = image_id if image_id in scenes else str(image_id)
        if key not in scenes:
            raise KeyError(f"no FineShapes scene for image {image_id!r}")
        facts = caption_facts(caption, scenes[key])
        parses += facts["parses"]
        for k in totals:
            totals[k].update(facts[k])
    out: dict[str, float] = {"parse_rate": parses / max(1, len(captions))}
    for cat in (*CATEGORIES, "all"):
        cats = CATEGORIES if cat == "all" else (cat,)
        stated = sum(totals["stated"][c] for c in cats)
        truth = sum(totals["truth"][c] for c in cats)
        out[f"precision_{cat}"] = sum(totals["true"][c] for c in cats) / stated if stated else float("nan")
        out[f"recall_{cat}"] = sum(totals["recalled"][c] for c in cats) / truth if truth else float("nan")
    out["facts_per_caption"] = sum(totals["stated"].values()) / max(1, len(captions))
    return out


@dataclass(frozen=True)
class Claim:
    """One fact a caption states: its category, the words that state it, and whether the scene has it."""

    category: str  # one of CATEGORIES
    text: str
    true: bool


def _mention_name(m: Mention) -> str:
    words = [w for w in (m.size, m.color, m.shape or "shape") if w]
    return " ".join(([str(m.count)] if m.count > 1 else []) + words) + ("s" if m.count > 1 else "")


def caption_claims(caption: str, scene: Scene) -> list[Claim] | None:
    """Each fact the caption states, marked true or false against the scene (None when it does not parse).

    The facts and their truth are those :func:`caption_facts` counts as stated and true.
    """
    p = parse(caption)
    if not p.ok:
        return None
    match = _match(p, scene)
    out: list[Claim] = []
    for i, m in enumerate(p.mentions):
        if m.count > 1:
            ok = _group_true(m, scene)
            out += [Claim(cat, _mention_name(m) if cat == "object" else getattr(m, attr), ok)
                    for cat, attr in _ATTRS if cat == "object" or getattr(m, attr) is not None]
            continue
        obj = scene.objects[match[i]] if i in match else None
        out += [Claim(cat, getattr(m, attr), obj is not None and getattr(obj, attr) == getattr(m, attr))
                for cat, attr in _ATTRS if getattr(m, attr) is not None]
    for a, rel, b in p.relations:
        ok = a in match and b in match and relation_holds(scene.objects[match[a]], scene.objects[match[b]], rel)
        out.append(Claim("relation", f"{_mention_name(p.mentions[a])} {rel} {_mention_name(p.mentions[b])}", ok))
    if p.background is not None:
        out.append(Claim("background", p.background, p.background == scene.background))
    return out
