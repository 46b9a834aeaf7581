"""FineShapes full descriptions and their one-detail-wrong twins.

A *twin* of a full description states the same scene in the same words except for exactly one
detail: one object's colour, shape or size, one relation, or the background. Attribute and
background twins describe a changed scene with the same random phrasing (the random stream is
replayed), so the wording differs only where the detail is named; a relation twin replaces one
relation phrase with a phrase of the opposite relation ("left of" -> "right of", "over" ->
"under"). Twins are always false: objects have distinct (colour, shape) pairs, and a changed
object gets a pair that no other object has.

Twins serve as hard negative captions when the tiny CLIP is pretrained (as in NegCLIP) and as
the foils of the attribute-sensitivity test.
"""
from __future__ import annotations

import copy
import dataclasses
import re

import numpy as np

from captioning.fineshapes import Obj, Scene, full_description
from captioning.fineshapes.lexicon import RELATION_PHRASES
from captioning.fineshapes.world import BACKGROUNDS, COLORS, OPPOSITE, SHAPES, SIZES

DETAILS = ("color", "shape", "size", "relation", "background")

_RELATION_OF = {p: rel for rel, ps in RELATION_PHRASES.items() if rel != "next to" for p in ps}
_RELATION_RE = re.compile(r"\b(" + "|".join(sorted(_RELATION_OF, key=len, reverse=True)) + r")\b")


def details_of(scene: Scene) -> tuple[str, ...]:
    """The details a twin of this scene's description can change (no relation with one object)."""
    return DETAILS if len(scene.objects) > 1 else tuple(d for d in DETAILS if d != "relation")


def mirror(scene: Scene) -> Scene:
    """The scene flipped left-right (x -> 1 - x): what a horizontally flipped image shows.

    Every FineShapes shape is left-right symmetric, so only positions (and hence the left/right
    relations) change.
    """
    return Scene(tuple(dataclasses.replace(o, x=round(1.0 - o.x, 4)) for o in scene.objects), scene.background)


def _choose(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def changed_scene(scene: Scene, detail: str, rng: np.random.Generator) -> Scene:
    """The scene with one object's colour, shape or size, or the background, changed at random.

    A new colour or shape is one that makes a (colour, shape) pair no object of the scene has.
    """
    if detail == "background":
        return Scene(scene.objects, _choose(rng, [b for b in BACKGROUNDS if b != scene.background]))
    if detail not in ("color", "shape", "size"):
        raise ValueError(f"changed_scene changes color, shape, size or background, not {detail!r}")
    k = int(rng.integers(len(scene.objects)))
    obj = scene.objects[k]
    kinds = {(o.color, o.shape) for o in scene.objects}
    if detail == "size":
        new = dataclasses.replace(obj, size=_choose(rng, [s for s in SIZES if s != obj.size]))
    elif detail == "color":
        new = dataclasses.replace(obj, color=_choose(rng, [c for c in COLORS if (c, obj.shape) not in kinds]))
    else:
        new = dataclasses.replace(obj, shape=_choose(rng, [s for s in SHAPES if (obj.color, s) not in kinds]))
    objects: tuple[Obj, ...] = scene.objects[:k] + (new,) + scene.objects[k + 1:]
    return Scene(objects, scene.background)


def flip_relation(text: str, rng: np.random.Generator) -> str:
    """Replace one relation phrase (chosen at random) by a phrase of the opposite relation."""
    found = list(_RELATION_RE.finditer(text))
    if not found:
        raise ValueError(f"no relation phrase to flip in {text!r}")
    m = found[int(rng.integers(len(found)))]
    relation = _RELATION_OF[m.group(1)]
    phrases = RELATION_PHRASES[relation]
    opposite = RELATION_PHRASES[OPPOSITE[relation]]
    replacement = opposite[phrases.index(m.group(1)) % len(opposite)]
    return text[:m.start()] + replacement + text[m.end():]


def description_and_twin(scene: Scene, detail: str, rng: np.random.Generator) -> tuple[str, str]:
    """A randomly phrased full description and its twin with ``detail`` changed."""
    if detail not in details_of(scene):
        raise ValueError(f"cannot change {detail!r} in a scene with {len(scene.objects)} object(s)")
    phrasing = copy.deepcopy(rng)
    positive = full_description(scene, rng)
    if detail == "relation":
        return positive, flip_relation(positive, rng)
    return positive, full_description(changed_scene(scene, detail, rng), phrasing)
