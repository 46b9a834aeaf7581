"""One image loader for captioning, feature extraction and retrieval: any PIL mode to 8-bit RGB.

* EXIF orientation is applied (photos from phones are stored sideways).
* 16-bit and 32-bit greyscale (``I;16``, ``I``) are scaled to 8 bits instead of saturating to
  white (PIL's ``convert("RGB")`` clips them); float images (``F``) are taken as [0, 1] when
  they fit it, else as [0, 255].
* Transparency (``RGBA``, ``LA``, ``PA``, palettes with a transparent colour) is composited on white.
* ``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` go through PIL's conversion.
* Images larger than ``Image.MAX_IMAGE_PIXELS`` (PIL's decompression-bomb limit) raise
  :class:`ImageTooLargeError` naming the size and the limit.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

WIDE_GREY = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


class ImageReadError(ValueError):
    """An image file cannot be read."""


class ImageTooLargeError(ImageReadError):
    """An image has more pixels than the decompression-bomb limit."""


def _grey_to_8bit(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    peak = float(values.max()) if values.size else 0.0
    if image.mode == "F":
        scale = 255.0 if peak <= 1.0 else 1.0
    elif image.mode.startswith("I;16") or peak > 255:
        scale = 1.0 / 257.0  # 65535 -> 255
    else:
        scale = 1.0
    return Image.fromarray(np.clip(np.round(values * scale), 0, 255).astype(np.uint8), "L")


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``image`` (see the module docstring for the modes)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in WIDE_GREY or image.mode == "F":
        image = _grey_to_8bit(image)
    transparent = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode in ("P", "L", "RGB") and "transparency" in image.info)
    if transparent:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _too_large(path: Path | str, detail: str) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"{path}: {detail}, more than the decompression-bomb limit of {Image.MAX_IMAGE_PIXELS} pixels; if the file is "
        "trusted, raise the limit (tools/caption.py --max_image_pixels N) or downscale the image")


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Read an image file as 8-bit RGB; a missing file raises FileNotFoundError, an unreadable one
    :class:`ImageReadError` naming it, an oversized one :class:`ImageTooLargeError`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _too_large(path, str(e).split(" exceeds")[0].replace("Image size", "image size")) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path} is not a readable image ({type(e).__name__}: {e})") from None
