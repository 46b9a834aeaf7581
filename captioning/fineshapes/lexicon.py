"""The words and phrases of FineShapes captions, shared by the generator and the parser.

Every phrase the generator can produce is listed here, so the parser accepts exactly the
language the generator speaks (plus nothing ungrammatical).
"""
from __future__ import annotations

from captioning.fineshapes.world import BACKGROUNDS, COLORS, SHAPES

PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "cross": "crosses"}
GENERIC_NOUNS = {"shape": "shapes", "object": "objects"}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
NUMBER_WORDS = {"two": 2, "three": 3}
INTROS = ("there is", "there are", "this is", "an image of", "a picture of", "a photo of")

RELATION_PHRASES = {
    "left of": ("left of", "to the left of"),
    "right of": ("right of", "to the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
    "next to": ("next to", "beside", "near"),
}

BACKGROUND_PHRASES = {
    "grass": ("on the grass", "on grass", "on a grassy field", "in a grassy field", "on a green lawn"),
    "sand": ("on the sand", "on sand", "on a sandy beach", "on the beach"),
    "water": ("in the water", "on the water", "on water", "on a lake"),
    "snow": ("in the snow", "on the snow", "on snow", "on a snowy field"),
    "brick": ("in front of a brick wall", "against a brick wall", "on a brick wall", "by a brick wall"),
}
for _bg in BACKGROUNDS:
    BACKGROUND_PHRASES[_bg] += (f"on a {_bg} background",)

SIZE_OF_WORD = {w: size for size, words in SIZE_WORDS.items() for w in words}
SHAPE_OF_NOUN = {s: (s, 1) for s in SHAPES} | {p: (s, 2) for s, p in PLURALS.items()}
GENERIC_OF_NOUN = {s: 1 for s in GENERIC_NOUNS} | {p: 2 for p in GENERIC_NOUNS.values()}
COLOR_WORDS = frozenset(COLORS)


def article(next_word: str) -> str:
    """'an' before a vowel-initial word, else 'a'."""
    return "an" if next_word[0] in "aeiou" else "a"


assert set(SHAPES) == set(PLURALS), "every shape needs a plural"
assert set(BACKGROUNDS) == set(BACKGROUND_PHRASES)
