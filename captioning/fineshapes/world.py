"""FineShapes scenes: objects with shape, colour, size and position on a background.

A scene is the exact truth of one image. Positions are in [0, 1] image coordinates
(x to the right, y downwards). Objects sit on the cells of a 3 x 3 grid (with jitter), so
every pair of objects is at least one cell apart on some axis, and consecutive objects in a
scene's order are always in the same row or the same column: their relation ("left of",
"right of", "above", "below") is unambiguous.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES = ("small", "large")
BACKGROUNDS = ("grass", "sand", "water", "snow", "brick")
RELATIONS = ("left of", "right of", "above", "below")
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

GRID = 3
CELL_CENTERS = tuple((i + 0.5) / GRID for i in range(GRID))
JITTER = 0.04
RADIUS = {"small": 0.08, "large": 0.125}
MIN_SEPARATION = 0.5 / GRID


@dataclass(frozen=True)
class Obj:
    """One object: its attributes and the centre of its bounding circle."""

    shape: str
    color: str
    size: str
    x: float
    y: float

    @property
    def noun_phrase(self) -> str:
        return f"{self.size} {self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """The exact truth of one image."""

    objects: tuple[Obj, ...]
    background: str

    def chain_relations(self) -> list[tuple[int, str, int]]:
        """The relation of each object to the next one, in scene order: (i, relation, i + 1)."""
        return [(i, relation_between(self.objects[i], self.objects[i + 1]), i + 1) for i in range(len(self.objects) - 1)]

    def to_json(self) -> dict[str, Any]:
        return {"background": self.background, "objects": [asdict(o) for o in self.objects]}

    @staticmethod
    def from_json(d: dict[str, Any]) -> "Scene":
        return Scene(tuple(Obj(**o) for o in d["objects"]), d["background"])


def relation_holds(a: Obj, b: Obj, relation: str) -> bool:
    """Whether ``a <relation> b`` is true; "next to" holds for any two distinct objects."""
    dx, dy = b.x - a.x, b.y - a.y
    if relation == "left of":
        return dx >= MIN_SEPARATION
    if relation == "right of":
        return -dx >= MIN_SEPARATION
    if relation == "above":
        return dy >= MIN_SEPARATION
    if relation == "below":
        return -dy >= MIN_SEPARATION
    if relation == "next to":
        return a != b
    raise ValueError(f"unknown relation {relation!r}; expected one of {RELATIONS + ('next to',)}")


def relation_between(a: Obj, b: Obj) -> str:
    """The dominant-axis relation of ``a`` to ``b`` ("left of" when b lies further right)."""
    dx, dy = b.x - a.x, b.y - a.y
    if abs(dx) >= abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


def sample_scene(rng: np.random.Generator, max_objects: int = 3) -> Scene:
    """Draw a scene: 1..max_objects objects with distinct (colour, shape), on the grid."""
    n = int(rng.integers(1, max_objects + 1))
    cells = _sample_chain_cells(rng, n)
    kinds: set[tuple[str, str]] = set()
    objects = []
    for col, row in cells:
        while True:
            shape = SHAPES[rng.integers(len(SHAPES))]
            color = COLORS[rng.integers(len(COLORS))]
            if (color, shape) not in kinds:
                kinds.add((color, shape))
                break
        size = SIZES[rng.integers(len(SIZES))]
        x = CELL_CENTERS[col] + rng.uniform(-JITTER, JITTER)
        y = CELL_CENTERS[row] + rng.uniform(-JITTER, JITTER)
        objects.append(Obj(shape, color, size, round(float(x), 4), round(float(y), 4)))
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    return Scene(tuple(objects), background)


def _sample_chain_cells(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    """Distinct grid cells where each cell shares a row or a column with the previous one."""
    while True:
        cells = [(int(rng.integers(GRID)), int(rng.integers(GRID)))]
        for _ in range(n - 1):
            col, row = cells[-1]
            options = [(c, row) for c in range(GRID)] + [(col, r) for r in range(GRID)]
            options = [c for c in options if c not in cells]
            if not options:
                break
            cells.append(options[rng.integers(len(options))])
        if len(cells) == n:
            return cells
