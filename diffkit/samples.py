"""Sample photographs that ship with a dependency (scikit-image's ``data`` module): no downloads."""

from __future__ import annotations

from typing import Any

from .checks import check_int
from .errors import InputError
from .i18n import N_

__all__ = ["SAMPLE_NAMES", "sample_image"]

# scikit-image bundles these RGB photographs in its wheel (no pooch download needed).
SAMPLE_NAMES: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "rocket")


def sample_image(name: str = "astronaut", size: int | tuple[int, int] | None = 256) -> Any:
    """A bundled RGB photograph as a ``PIL.Image``, centre-cropped to a square and resized.

    *size* is the output side (or ``(width, height)``); ``None`` keeps the original.
    Names: :data:`SAMPLE_NAMES` (scikit-image's ``astronaut`` is Eileen Collins, NASA, public domain;
    ``chelsea`` a cat; ``coffee`` a cup; ``rocket`` a launch).
    """
    from PIL import Image
    from skimage import data

    if name not in SAMPLE_NAMES:
        raise InputError(f"unknown sample image {name!r}; choose one of {list(SAMPLE_NAMES)}")
    img = Image.fromarray(getattr(data, name)()).convert("RGB")
    if size is None:
        return img
    w, h = img.size
    side = min(w, h)
    img = img.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    if isinstance(size, (tuple, list)) and len(size) == 2:
        size = tuple(check_int(nm, v, lo=1, hi=8192, hint=N_("pixels")) for nm, v in zip(("width", "height"), size))
    else:
        side = check_int("size", size, lo=1, hi=8192, hint=N_("the side in pixels, or (width, height)"))
        size = (side, side)
    return img.resize(size, Image.Resampling.LANCZOS)
