"""Parse a FineShapes caption into the claims it makes.

Grammar (tokens are lowercased words; punctuation is ignored)::

    caption  := [intro] clause ("and" clause)* [background]
    clause   := np [relation np]
    np       := ("a" | "an" | "one" | "the") [size] [colour] noun
              | ("two" | "three") [size] [colour] plural-noun
    noun     := circle | square | triangle | star | cross | shape | object

Intro, relation and background phrases come from :mod:`captioning.fineshapes.lexicon`.
"a"/"an" must agree with the next word and a size word must come before a colour word.
A definite np ("the blue square") that fits an earlier mention refers back to it.

A parse lists *mentions* (objects or groups with the attributes stated), *relations*
between mentions, and the background, if stated.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from captioning.fineshapes.lexicon import (
    BACKGROUND_PHRASES,
    COLOR_WORDS,
    GENERIC_OF_NOUN,
    INTROS,
    NUMBER_WORDS,
    RELATION_PHRASES,
    SHAPE_OF_NOUN,
    SIZE_OF_WORD,
    article,
)
from captioning.fineshapes.world import OPPOSITE, Scene


@dataclass
class Mention:
    """An object (count 1) or a group of ``count`` objects with the attributes a caption states."""

    shape: str | None = None
    color: str | None = None
    size: str | None = None
    count: int = 1

    def key(self) -> tuple:
        return (self.shape, self.color, self.size, self.count)


@dataclass
class Parse:
    """What a caption claims. ``ok`` is False (with ``error``) when it is not in the grammar."""

    ok: bool
    mentions: list[Mention] = field(default_factory=list)
    relations: list[tuple[int, str, int]] = field(default_factory=list)
    background: str | None = None
    error: str | None = None

    def claims(self) -> tuple[frozenset, frozenset, str | None]:
        """An order-free summary: mention keys, relations between mention keys, background.

        Relations are put in one direction ("A right of B" becomes "B left of A"), so two
        captions that state the same facts in different words or orders compare equal.
        """
        rels = set()
        for i, rel, j in self.relations:
            a, b = self.mentions[i].key(), self.mentions[j].key()
            if rel in ("right of", "below"):
                a, b, rel = b, a, OPPOSITE[rel]
            elif rel == "next to":
                a, b = sorted((a, b), key=repr)
            rels.add((a, rel, b))
        return frozenset(m.key() for m in self.mentions), frozenset(rels), self.background


def tokenize(caption: str) -> list[str]:
    """Lowercase words, punctuation dropped (as the Karpathy tokens)."""
    return re.findall(r"[a-z]+", caption.lower())


def _phrase_table(phrases: dict[str, tuple[str, ...]]) -> list[tuple[tuple[str, ...], str]]:
    table = [(tuple(p.split()), value) for value, ps in phrases.items() for p in ps]
    return sorted(table, key=lambda t: -len(t[0]))


_RELATIONS = _phrase_table(RELATION_PHRASES)
_BACKGROUNDS = _phrase_table(BACKGROUND_PHRASES)
_INTROS = _phrase_table({i: (i,) for i in INTROS})


class ParseError(ValueError):
    """The caption is outside the FineShapes grammar."""


class _Parser:
    def __init__(self, tokens: list[str]):
        self.toks = tokens
        self.pos = 0
        self.result = Parse(ok=True)

    def peek(self) -> str | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def fail(self, expected: str) -> ParseError:
        got = repr(self.peek()) if self.peek() is not None else "end of caption"
        return ParseError(f"expected {expected} at word {self.pos + 1}, got {got}")

    def match_phrase(self, table: list[tuple[tuple[str, ...], str]]) -> str | None:
        for words, value in table:
            if tuple(self.toks[self.pos : self.pos + len(words)]) == words:
                self.pos += len(words)
                return value
        return None

    def parse(self) -> Parse:
        if not self.toks:
            raise ParseError("empty caption")
        intro = self.match_phrase(_INTROS)
        if intro in ("there is", "there are") and (self.peek() in NUMBER_WORDS) != (intro == "there are"):
            raise self.fail(f"a {'plural' if intro == 'there are' else 'singular'} noun phrase after {intro!r}")
        self.clause()
        while self.peek() == "and":
            self.pos += 1
            self.clause()
        self.result.background = self.match_phrase(_BACKGROUNDS)
        if self.pos != len(self.toks):
            raise self.fail("'and', a relation or a background phrase")
        return self.result

    def clause(self) -> None:
        subject = self.noun_phrase()
        relation = self.match_phrase(_RELATIONS)
        if relation is not None:
            self.result.relations.append((subject, relation, self.noun_phrase()))

    def noun_phrase(self) -> int:
        det = self.peek()
        if det in ("a", "an", "one", "the"):
            count = 1
        elif det in NUMBER_WORDS:
            count = NUMBER_WORDS[det]
        else:
            raise self.fail("a noun phrase ('a', 'an', 'one', 'the', 'two', 'three')")
        self.pos += 1
        nxt = self.peek()
        if det in ("a", "an") and (nxt is None or article(nxt) != det):
            raise self.fail(f"a word that takes the article {det!r}")
        mention = Mention(count=count)
        if nxt in SIZE_OF_WORD:
            mention.size = SIZE_OF_WORD[nxt]
            self.pos += 1
        if self.peek() in COLOR_WORDS:
            mention.color = self.peek()
            self.pos += 1
        noun = self.peek()
        if noun in SHAPE_OF_NOUN:
            mention.shape, number = SHAPE_OF_NOUN[noun]
        elif noun in GENERIC_OF_NOUN:
            number = GENERIC_OF_NOUN[noun]
        else:
            raise self.fail("a shape noun")
        if (number == 1) != (count == 1):
            raise self.fail(f"a {'singular' if count == 1 else 'plural'} noun")
        self.pos += 1
        if det == "the":
            ref = self.antecedent(mention)
            if ref is not None:
                return ref
        self.result.mentions.append(mention)
        return len(self.result.mentions) - 1

    def antecedent(self, m: Mention) -> int | None:
        """The latest earlier single mention that ``m`` can refer to, merging its attributes."""
        for i in range(len(self.result.mentions) - 1, -1, -1):
            prev = self.result.mentions[i]
            if prev.count != 1:
                continue
            if all(a is None or b is None or a == b for a, b in
                   ((m.shape, prev.shape), (m.color, prev.color), (m.size, prev.size))):
                prev.shape = prev.shape or m.shape
                prev.color = prev.color or m.color
                prev.size = prev.size or m.size
                return i
        return None


def parse(caption: str) -> Parse:
    """Parse a caption; never raises for bad input, it returns ``Parse(ok=False, error=...)``."""
    try:
        return _Parser(tokenize(caption)).parse()
    except ParseError as e:
        return Parse(ok=False, error=str(e))


def scene_claims(scene: Scene) -> Parse:
    """The scene's full truth in the form of a parse: every object, the chain relations, the background."""
    mentions = [Mention(o.shape, o.color, o.size, 1) for o in scene.objects]
    return Parse(ok=True, mentions=mentions, relations=scene.chain_relations(), background=scene.background)
