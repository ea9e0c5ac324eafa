"""Seeded PIL drawings of the pictogram world (shapes, two-object scenes, person pictograms).
The public face is :mod:`diffkit.tiny.world`."""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InputError

__all__ = [
    "check_person",
    "check_size",
    "draw",
    "draw_accent",
    "draw_figure",
    "draw_pair",
    "draw_person",
    "draw_sample",
    "draw_shape",
    "draw_shape_on",
    "pair_boxes",
    "sample_world",
]

from diffkit.tiny.grammar import (
    ACCENT,
    COLORS,
    IMAGE_SIZE,
    IMAGE_SIZES,
    OCCUPATION_BACKGROUNDS,
    OCCUPATIONS,
    SHAPE_BACKGROUND,
    SHAPES,
    SILHOUETTE,
    Attributes,
    Sample,
    WorldConfig,
    sample_attributes,
)


def check_size(size: int) -> float:
    """The scale from the 64-unit design grid to *size* pixels."""
    if size not in IMAGE_SIZES:
        raise InputError(f"size must be one of {IMAGE_SIZES}, got {size!r}")
    return size / IMAGE_SIZE


def _check_color(color: str) -> None:
    if color not in COLORS:
        raise InputError(f"unknown color {color!r}; choose one of {tuple(COLORS)}")


def draw_shape(color: str, shape: str, rng: random.Random, *, size: int = IMAGE_SIZE) -> Image.Image:
    """A flat *color* *shape* on white, *size*² pixels; 26–46 of 64 units wide at a random position."""
    k = check_size(size)
    _check_color(color)
    img = Image.new("RGB", (size, size), SHAPE_BACKGROUND)
    d = ImageDraw.Draw(img)
    side = rng.randint(26, 46)
    x0 = rng.randint(4, IMAGE_SIZE - 4 - side)
    y0 = rng.randint(4, IMAGE_SIZE - 4 - side)
    fill = COLORS[color]
    if k == 1:  # integer coordinates, exactly as diffkit-tiny 1 was trained on
        draw_shape_on(d, shape, x0, y0, side, fill)
    else:
        draw_shape_on(d, shape, x0 * k, y0 * k, side * k, fill)
    return img


def pair_boxes(rng: random.Random) -> list[tuple[int, int, int]]:
    """Two non-overlapping squares ``(x0, y0, side)`` on the 64-unit grid, sides 18–26.

    The squares are at least 2 units apart along x or y, and 3 units from the edges.
    """
    for _ in range(1000):
        boxes = []
        for _ in range(2):
            side = rng.randint(18, 26)
            boxes.append((rng.randint(3, IMAGE_SIZE - 3 - side), rng.randint(3, IMAGE_SIZE - 3 - side), side))
        (x1, y1, s1), (x2, y2, s2) = boxes
        apart_x = x1 + s1 + 2 <= x2 or x2 + s2 + 2 <= x1
        apart_y = y1 + s1 + 2 <= y2 or y2 + s2 + 2 <= y1
        if apart_x or apart_y:
            return boxes
    raise RuntimeError("no non-overlapping placement found in 1000 tries")  # pragma: no cover


def draw_pair(
    color: str,
    shape: str,
    color2: str,
    shape2: str,
    rng: random.Random,
    *,
    size: int = IMAGE_SIZE,
    layers: bool = False,
):
    """Two flat shapes on white at random, non-overlapping places (see :func:`pair_boxes`).

    With *layers*, returns ``(image, [mask1, mask2])``: each object's own pixels as a
    boolean (size, size) array, the truth the attention bar compares the words' maps with.
    """
    k = check_size(size)
    for c in (color, color2):
        _check_color(c)
    img = Image.new("RGB", (size, size), SHAPE_BACKGROUND)
    d = ImageDraw.Draw(img)
    masks = []
    for (x0, y0, side), c, s in zip(pair_boxes(rng), (color, color2), (shape, shape2)):
        draw_shape_on(d, s, x0 * k, y0 * k, side * k, COLORS[c])
        if layers:
            m = Image.new("L", (size, size), 0)
            draw_shape_on(ImageDraw.Draw(m), s, x0 * k, y0 * k, side * k, 255)
            masks.append(np.asarray(m) > 0)
    return (img, masks) if layers else img


def draw_shape_on(d: ImageDraw.ImageDraw, shape: str, x0: float, y0: float, size: float, fill) -> None:
    x1, y1 = x0 + size - 1, y0 + size - 1
    if shape == "circle":
        d.ellipse([x0, y0, x1, y1], fill=fill)
    elif shape == "square":
        d.rectangle([x0, y0, x1, y1], fill=fill)
    elif shape == "triangle":
        d.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "cross":
        a, b = x0 + size / 3, x0 + 2 * size / 3
        c, e = y0 + size / 3, y0 + 2 * size / 3
        d.rectangle([a, y0, b, y1], fill=fill)
        d.rectangle([x0, c, x1, e], fill=fill)
    else:
        raise InputError(f"unknown shape {shape!r}; choose one of {SHAPES}")


def draw_person(gender: str, occupation: str, rng: random.Random, *, size: int = IMAGE_SIZE) -> Image.Image:
    """An ISO 7001-style *gender* pictogram on the *occupation*'s background, *size*² pixels.

    The figure is drawn on a 100-unit-tall design grid scaled to 46–56 of the image's 64 units.
    """
    k = check_size(size)
    check_person(gender, occupation)
    img = Image.new("RGB", (size, size), OCCUPATION_BACKGROUNDS[occupation])
    h = rng.randint(46, 56)
    cx = rng.uniform(26, 38)
    top = rng.uniform(3, IMAGE_SIZE - 3 - h)
    draw_figure(ImageDraw.Draw(img), gender, occupation, cx * k, top * k, h * k / 100.0)
    return img


def check_person(gender: str, occupation: str) -> None:
    if occupation not in OCCUPATION_BACKGROUNDS:
        raise InputError(f"unknown occupation {occupation!r}; choose one of {OCCUPATIONS}")
    if gender not in ("woman", "man"):
        raise InputError(f"gender must be 'woman' or 'man', got {gender!r}")


def draw_figure(
    d: ImageDraw.ImageDraw,
    gender: str,
    occupation: str | None,
    cx: float,
    top: float,
    s: float,
    *,
    accent: bool = True,
    figure: bool = True,
) -> None:
    """One pictogram on *d*: design units (100 tall) times *s* pixels, head centre at x = *cx*,
    top at y = *top* (pixels). ``figure=False`` draws only the occupation's accent (a hat or a
    tool with nobody wearing or holding it); ``accent=False`` only the figure."""

    def P(x: float, y: float) -> tuple[float, float]:  # design units -> pixels
        return (cx + x * s, top + y * s)

    def rect(xa, ya, xb, yb, fill=SILHOUETTE):
        d.rectangle([*P(xa, ya), *P(xb, yb)], fill=fill)

    def poly(pts, fill=SILHOUETTE):
        d.polygon([P(x, y) for x, y in pts], fill=fill)

    def circle(x, y, r, fill=SILHOUETTE):
        d.ellipse([*P(x - r, y - r), *P(x + r, y + r)], fill=fill)

    if figure:
        # head
        circle(0, 10, 9)
        # arms (thin bars at the sides)
        rect(-21, 23, -16, 56)
        rect(16, 23, 21, 56)
        if gender == "man":
            rect(-13, 22, 13, 60)  # straight torso
            rect(-12, 60, -2, 100)  # legs
            rect(2, 60, 12, 100)
        else:
            poly([(-11, 22), (11, 22), (27, 76), (-27, 76)])  # dress widening to the hem
            rect(-9, 76, -3, 100)  # legs
            rect(3, 76, 9, 100)
    if accent and occupation is not None:
        draw_accent(occupation, rect, poly, circle)


def draw_accent(occupation: str, rect, poly, circle) -> None:
    """The white hat, tool or badge of each occupation (design units)."""
    w = ACCENT
    if occupation == "nurse":  # cap
        rect(-8, -1, 8, 4, w)
    elif occupation == "housekeeper":  # broom in the right hand
        rect(24, 10, 27, 78, w)
        poly([(20, 78), (31, 78), (34, 96), (17, 96)], w)
    elif occupation == "teacher":  # board with a pointer
        rect(-47, 4, -27, 30, w)
        rect(-27, 28, -22, 31, w)
    elif occupation == "pharmacist":  # cross badge
        rect(-3, 30, 3, 46, w)
        rect(-8, 35, 8, 41, w)
    elif occupation == "lawyer":  # briefcase
        rect(24, 50, 42, 66, w)
    elif occupation == "CEO":  # tie
        poly([(-3, 23), (3, 23), (5, 48), (0, 54), (-5, 48)], w)
    elif occupation == "software developer":  # laptop in front of the body
        rect(-18, 38, 18, 50, w)
    elif occupation == "pilot":  # peaked cap
        rect(-10, -3, 10, 3, w)
        rect(-10, 3, 15, 5, w)
    elif occupation == "firefighter":  # helmet with a brim
        circle(0, 4, 9, w)
        rect(-14, 4, 14, 7, w)
    elif occupation == "electrician":  # lightning bolt beside the figure
        poly([(30, 10), (40, 10), (34, 26), (42, 26), (28, 48), (32, 30), (25, 30)], w)


def draw(attributes: Attributes, rng: random.Random, *, size: int = IMAGE_SIZE) -> Image.Image:
    """Draw the image of *attributes* with *rng*, *size*² pixels."""
    a = attributes
    if a.kind == "shape":
        return draw_shape(a.color, a.shape, rng, size=size)
    if a.kind == "pair":
        return draw_pair(a.color, a.shape, a.color2, a.shape2, rng, size=size)
    return draw_person(a.gender, a.occupation, rng, size=size)


def draw_sample(attributes: Attributes, *, seed: int, caption: str | None = None, size: int = IMAGE_SIZE) -> Sample:
    """One seeded image of *attributes* (the same seed gives the same pixels)."""
    rng = random.Random(seed)
    img = draw(attributes, rng, size=size)
    if caption is None:
        caption = rng.choice(attributes.captions())
    return Sample(attributes, caption, img, seed)


def sample_world(
    n: int, *, seed: int = 0, config: WorldConfig | None = None, size: int = IMAGE_SIZE
) -> Iterator[Sample]:
    """*n* seeded samples (attributes, caption, image) from the world's distribution."""
    config = config or WorldConfig()
    master = random.Random(seed)
    for _ in range(n):
        s = master.getrandbits(63)
        rng = random.Random(s)
        a, caption = sample_attributes(rng, config)
        yield Sample(a, caption, draw(a, rng, size=size), s)
