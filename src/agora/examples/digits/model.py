"""The digits classifier: training on scikit-learn's 8×8 digits, and any image made into one.

The data set's images are handwritten digits, size-normalised into a 32×32 box, white ink on
black, then counted in 4×4 blocks: 8×8 values from 0 (no ink) to 16 (all ink). An uploaded
image goes the same way: greyscale, ink made white, cropped to the ink, centred in a square,
averaged down to 8×8 and scaled to 0–16.
"""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from agora.examples.errors import BadInput

CLASSIFIERS = ("logistic_regression", "svc", "knn")
DEFAULTS: dict[str, Any] = {
    "classifier": "logistic_regression",
    "C": 1.0,
    "test_size": 0.25,
    "seed": 0,
}
MAX_PIXELS = 4096 * 4096  # an upload larger than this is refused before it is decoded
INK = 0.1  # a pixel at least this bright (after the background is removed) is ink


class ImageError(BadInput):
    """The uploaded file cannot be made into a digit; the message says why, for a person."""


def make_classifier(classifier: str, c: float) -> Any:
    # scikit-learn takes seconds to import: a process that only predicts loads it with the
    # model (unpickling), so the module itself imports it only to fit.
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if classifier == "svc":
        # Calibrated for probabilities (SVC's own `probability=True` is deprecated).
        return CalibratedClassifierCV(SVC(C=c, gamma="scale"), ensemble=False)
    if classifier == "logistic_regression":
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
    if classifier == "knn":
        return KNeighborsClassifier(n_neighbors=3)
    raise BadInput(f"classifier: one of {', '.join(CLASSIFIERS)}, not {classifier!r}")


def sample() -> Any:
    """The data set's inputs: a predictor is checked against them (see ``store.Predictor``)."""
    from sklearn.datasets import load_digits

    return load_digits().data


def fit(
    classifier: str = DEFAULTS["classifier"],
    C: float = DEFAULTS["C"],  # noqa: N803 (the usual name of the argument)
    test_size: float = DEFAULTS["test_size"],
    seed: int = DEFAULTS["seed"],
) -> tuple[Any, dict[str, Any]]:
    """Fit on a split of the data set; the report holds the accuracy on the held-out part."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    started = time.perf_counter()
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=test_size, random_state=seed, stratify=digits.target
    )
    estimator = make_classifier(classifier, C)
    estimator.fit(x_train, y_train)
    accuracy = float(estimator.score(x_test, y_test))
    report = {
        "classifier": classifier,
        "C": C,
        "test_size": test_size,
        "seed": seed,
        "accuracy": round(accuracy, 4),
        "train_samples": len(y_train),
        "test_samples": len(y_test),
        "seconds": round(time.perf_counter() - started, 3),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return estimator, report


def image_to_digit(path: str, name: str) -> np.ndarray:
    """The file at ``path`` as the data set's 8×8 values (0–16); ``name`` is for messages."""
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ImageError(
                    f"image: {name} is {im.width}×{im.height} pixels; at most {MAX_PIXELS} please"
                )
            im.load()
            grey = _greyscale(im)
    except UnidentifiedImageError as exc:
        raise ImageError(
            f"image: {name} is not a PNG/JPEG image (or another format Pillow reads); "
            "send a picture of one handwritten digit"
        ) from exc
    except (OSError, SyntaxError) as exc:  # Pillow's error for a damaged file
        raise ImageError(f"image: {name} could not be decoded ({exc})") from exc

    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = float(np.median(border))
    # The ink is what differs from the background: brighter on dark paper, darker on light.
    ink = background - grey if background > 0.5 else grey - background
    np.maximum(ink, 0.0, out=ink)
    peak = float(ink.max())
    if peak < INK:
        raise ImageError(f"image: {name} is blank; no digit found")

    marked = ink >= INK * peak  # at least INK of the brightest ink
    rows = np.flatnonzero(marked.any(axis=1))
    cols = np.flatnonzero(marked.any(axis=0))
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] / peak
    h, w = ink.shape
    side = max(h, w)
    square = np.zeros((side, side), dtype=np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    square[top : top + h, left : left + w] = ink
    small = Image.fromarray(square).resize((8, 8), Image.Resampling.BOX)
    return np.clip(np.asarray(small, dtype=np.float64) * 16.0, 0.0, 16.0)


def _greyscale(im: Image.Image) -> np.ndarray:
    """0 (black) to 1 (white); a transparent background counts as white paper."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(paper, rgba)
    return np.asarray(im.convert("L"), dtype=np.float32) * np.float32(1 / 255)


def digit_png(values: np.ndarray, scale: int = 8) -> bytes:
    """An 8×8 digit (0–16) as a PNG, white on black as in the data set, each value a block."""
    pixels = np.round(np.clip(values, 0, 16) * (255 / 16)).astype(np.uint8)
    im = Image.fromarray(pixels).resize((8 * scale, 8 * scale), Image.Resampling.NEAREST)
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()
