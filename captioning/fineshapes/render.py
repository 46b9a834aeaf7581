"""Draw a FineShapes scene as an RGB image with PIL."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from captioning.fineshapes.world import RADIUS, Obj, Scene

RGB = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (40, 80, 230),
    "yellow": (245, 220, 40),
    "purple": (150, 60, 200),
    "orange": (250, 140, 30),
}
OUTLINE = (20, 20, 20)


def render(scene: Scene, size: int, rng: np.random.Generator) -> Image.Image:
    """The scene drawn at ``size`` x ``size`` pixels; ``rng`` only varies the background texture."""
    img = Image.fromarray(_background(scene.background, size, rng))
    draw = ImageDraw.Draw(img)
    width = max(1, round(size / 64))
    for obj in scene.objects:
        _draw_object(draw, obj, size, width)
    return img


def _background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == "grass":
        base = np.array([70, 130, 45], np.float32)
        blades = (np.sin(2 * math.pi * (x * 24 + rng.uniform())) > 0.6) * (np.sin(2 * math.pi * (y * 3 + rng.uniform())) > -0.2)
        img = base + blades[..., None] * np.array([-25, -30, -15], np.float32)
    elif kind == "sand":
        img = np.broadcast_to(np.array([228, 205, 150], np.float32), (size, size, 3)).copy()
        dots = rng.random((size, size)) < 0.04
        img[dots] -= np.array([50, 50, 40], np.float32)
    elif kind == "water":
        phase = rng.uniform(0, 2 * math.pi)
        wave = np.sin(2 * math.pi * (y * 7 + 0.08 * np.sin(2 * math.pi * x * 2 + phase)))
        img = np.array([40, 110, 190], np.float32) + (wave > 0.7)[..., None] * np.array([60, 60, 50], np.float32)
    elif kind == "snow":
        img = np.broadcast_to(np.array([236, 240, 246], np.float32), (size, size, 3)).copy()
        dots = rng.random((size, size)) < 0.03
        img[dots] = np.array([185, 200, 225], np.float32)
    elif kind == "brick":
        rows = 6
        row = np.floor(y * rows + 1e-6)
        shift = (row % 2) * 0.5
        mortar_h = (y * rows) % 1.0 < 0.12
        mortar_v = ((x * 4 + shift + rng.uniform()) % 1.0) < 0.05
        mortar, brick = np.array([205, 200, 190], np.float32), np.array([160, 75, 55], np.float32)
        img = np.where((mortar_h | mortar_v)[..., None], mortar, brick)
    else:
        raise ValueError(f"unknown background {kind!r}")
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_object(draw: ImageDraw.ImageDraw, obj: Obj, size: int, width: int) -> None:
    cx, cy, r = obj.x * size, obj.y * size, RADIUS[obj.size] * size
    fill = RGB[obj.color]
    if obj.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=OUTLINE, width=width)
        return
    if obj.shape == "square":
        h = r * 0.85
        pts = [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    elif obj.shape == "triangle":
        pts = [(cx + r * math.cos(a), cy + 0.15 * r + r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    elif obj.shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.45 * r
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    elif obj.shape == "cross":
        w = 0.34 * r
        pts = [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w), (cx + w, cy + w),
               (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w), (cx - r, cy - w), (cx - w, cy - w)]
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")
    draw.polygon(pts, fill=fill, outline=OUTLINE, width=width)
