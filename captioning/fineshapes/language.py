"""Captions of FineShapes scenes.

* :func:`full_description` states the whole truth (every object with size, colour and shape,
  the relation of each object to the next, the background), canonically or, with an ``rng``,
  in a random phrasing.
* :func:`reference_caption` writes like a COCO annotator: it nearly always names the objects,
  but each detail (colour, size, relation, background) appears only in some references.
  The consensus of five references is therefore coarser than the truth.
* :func:`eval_phrases` gives the FineCapEval-style background / object / relation phrases.

Every caption is in the grammar of :mod:`captioning.fineshapes.parser`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from captioning.fineshapes.lexicon import (
    BACKGROUND_PHRASES,
    GENERIC_NOUNS,
    INTROS,
    PLURALS,
    RELATION_PHRASES,
    SIZE_WORDS,
    article,
)
from captioning.fineshapes.world import OPPOSITE, Obj, Scene, relation_between

NUMBER_NAMES = {2: "two", 3: "three"}


@dataclass(frozen=True)
class ReferenceStyle:
    """How often a COCO-like reference states each kind of detail."""

    p_color: float = 0.3
    p_size: float = 0.2
    p_generic_noun: float = 0.05
    p_group: float = 0.12
    p_relation: float = 0.25
    p_next_to: float = 0.3
    p_background: float = 0.35
    p_intro: float = 0.25
    p_period: float = 0.5


def _choice(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _intro(plural: bool, rng: np.random.Generator) -> str:
    """An opening phrase that agrees in number with the first noun phrase."""
    return _choice(rng, tuple(i for i in INTROS if i != ("there is" if plural else "there are")))


def _np(words: list[str], definite: bool = False, rng: np.random.Generator | None = None) -> str:
    """A singular noun phrase with the right determiner."""
    if definite:
        det = "the"
    elif rng is not None and rng.random() < 0.15:
        det = "one"
    else:
        det = article(words[0])
    return " ".join([det, *words])


def _object_words(obj: Obj, size: bool, color: bool, rng: np.random.Generator | None, generic: bool = False) -> list[str]:
    words = []
    if size:
        words.append(_choice(rng, SIZE_WORDS[obj.size]) if rng is not None else obj.size)
    if color:
        words.append(obj.color)
    words.append(_choice(rng, tuple(GENERIC_NOUNS)) if generic else obj.shape)
    return words


def _relation_words(relation: str, rng: np.random.Generator | None) -> str:
    return _choice(rng, RELATION_PHRASES[relation]) if rng is not None else relation


def _background_words(bg: str, rng: np.random.Generator | None) -> str:
    return _choice(rng, BACKGROUND_PHRASES[bg]) if rng is not None else BACKGROUND_PHRASES[bg][0]


def full_description(scene: Scene, rng: np.random.Generator | None = None) -> str:
    """A caption that states the whole truth; canonical without ``rng``, randomly phrased with it.

    Canonical form: "a small red circle left of a large blue square and a small green star
    below the large blue square on the grass".
    """
    objs = scene.objects
    full = [_object_words(o, True, True, rng) for o in objs]
    if len(objs) == 1:
        clauses = [_np(full[0], rng=rng)]
    else:
        clauses = []
        for i, rel, j in scene.chain_relations():
            flip = rng is not None and rng.random() < 0.5
            a, b, r = (j, i, OPPOSITE[rel]) if flip else (i, j, rel)
            first_mention = i == 0
            left = _np(full[a], definite=not first_mention and a == i, rng=rng)
            right = _np(full[b], definite=not first_mention and b == i, rng=rng)
            clauses.append(f"{left} {_relation_words(r, rng)} {right}")
    text = " and ".join(clauses) + " " + _background_words(scene.background, rng)
    if rng is not None and rng.random() < 0.3:
        text = f"{_intro(False, rng)} {text}"
    return text


def reference_caption(scene: Scene, rng: np.random.Generator, style: ReferenceStyle = ReferenceStyle()) -> str:
    """A COCO-annotator-like reference (lowercase, no punctuation; see :func:`raw_caption`)."""
    objs = list(scene.objects)
    order = [objs[k] for k in rng.permutation(len(objs))]
    if len(objs) > 1 and rng.random() < style.p_group:
        color = len({o.color for o in objs}) == 1 and rng.random() < style.p_color
        same_shape = len({o.shape for o in objs}) == 1
        shape_noun = PLURALS[objs[0].shape] if same_shape else GENERIC_NOUNS[_choice(rng, tuple(GENERIC_NOUNS))]
        words = [NUMBER_NAMES[len(objs)]] + ([objs[0].color] if color else []) + [shape_noun]
        text = " ".join(words)
    else:
        phrases = [
            _object_words(o, rng.random() < style.p_size, rng.random() < style.p_color, rng,
                          generic=rng.random() < style.p_generic_noun)
            for o in order
        ]
        if len(order) > 1 and rng.random() < style.p_relation:
            a, b = order[0], order[1]
            rel = "next to" if rng.random() < style.p_next_to else relation_between(a, b)
            head = f"{_np(phrases[0], rng=rng)} {_relation_words(rel, rng)} {_np(phrases[1], rng=rng)}"
            text = " and ".join([head] + [_np(p, rng=rng) for p in phrases[2:]])
        else:
            text = " and ".join(_grouped(phrases, rng))
    if rng.random() < style.p_background:
        text += " " + _background_words(scene.background, rng)
    if rng.random() < style.p_intro:
        text = f"{_intro(text.split()[0] in NUMBER_NAMES.values(), rng)} {text}"
    return text


def _grouped(phrases: list[list[str]], rng: np.random.Generator) -> list[str]:
    """Noun phrases, with identical ones merged into a plural ("a circle and a circle" -> "two circles")."""
    counts: dict[tuple[str, ...], int] = {}
    for p in phrases:
        counts[tuple(p)] = counts.get(tuple(p), 0) + 1
    out = []
    for words, k in counts.items():
        if k == 1:
            out.append(_np(list(words), rng=rng))
        else:
            *adjs, noun = words
            out.append(" ".join([NUMBER_NAMES[k], *adjs, PLURALS.get(noun) or GENERIC_NOUNS[noun]]))
    return out


def raw_caption(text: str, rng: np.random.Generator, style: ReferenceStyle = ReferenceStyle()) -> str:
    """How an annotator types it: capitalised, sometimes with a final period."""
    raw = text[0].upper() + text[1:]
    return raw + "." if rng.random() < style.p_period else raw


def eval_phrases(scene: Scene) -> dict[str, list[str]]:
    """FineCapEval-style phrases: the background, each object, each chain relation.

    A single object's relation is the one to the background ("small red circle on grass"), so
    that no field is empty (FineCapEval scoring skips rows with an empty field).
    """
    objs = scene.objects
    return {
        "background": [scene.background],
        "object": [o.noun_phrase for o in objs],
        "relation": [f"{objs[i].noun_phrase} {rel} {objs[j].noun_phrase}" for i, rel, j in scene.chain_relations()]
        or [f"{objs[0].noun_phrase} on {scene.background}"],
    }
