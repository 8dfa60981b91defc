"""Pictures for the digits module: samples of scikit-learn's digits drawn as image files."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def digit_png(index: int, size: int = 64, dark_on_light: bool = False) -> tuple[bytes, int]:
    """The data set's image ``index`` as a PNG of ``size``×``size`` pixels, and its digit."""
    digits = load_digits()
    pixels = np.round(digits.images[index] * (255 / 16)).astype(np.uint8)
    if dark_on_light:
        pixels = 255 - pixels
    im = Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST)
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue(), int(digits.target[index])


def pen_on_transparent_png(index: int, size: int = 96) -> tuple[bytes, int]:
    """As drawn on a web canvas: black ink whose alpha is the ink, on a transparent background,
    the digit small in a corner of a large picture."""
    digits = load_digits()
    ink = np.round(digits.images[index] * (255 / 16)).astype(np.uint8)
    glyph = Image.fromarray(ink).resize((size // 3, size // 3), Image.Resampling.BILINEAR)
    alpha = Image.new("L", (size, size), 0)
    alpha.paste(glyph, (size // 10, size // 8))
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    im.putalpha(alpha)
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue(), int(digits.target[index])
