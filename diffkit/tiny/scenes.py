"""Scenes for the judge and the person gate, drawn with a known truth (issue 23). The public face
is :mod:`diffkit.tiny.world`."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InputError

__all__ = [
    "PARTIAL_KEEP",
    "SCENE_KINDS",
    "SCENE_OUTCOMES",
    "Scene",
    "draw_background",
    "draw_blank",
    "draw_blend",
    "draw_noise",
    "draw_partial",
    "draw_people",
    "draw_scene",
    "sample_scene",
    "scene_set",
]

from diffkit.tiny.drawing import check_person, check_size, draw_figure, draw_person
from diffkit.tiny.grammar import (
    IMAGE_SIZE,
    OCCUPATION_BACKGROUNDS,
    OCCUPATIONS,
    SHAPE_BACKGROUND,
)

# ----------------------------------------------------------------------------- scenes for the judge
# What a person gate must tell apart, drawn with a known truth: nobody (an occupation's
# background, its hat or tool alone, noise, a flat colour), one person, two people, and figures
# whose gender cannot be read (a 50/50 blend of the two silhouettes, a figure drawn only down to
# the chest). The generator never trains on these; the judge (diffkit.tiny.clip) and the gate
# tests do.

#: Scene kinds and the outcome a person gate should give each (:func:`draw_scene`).
SCENE_OUTCOMES: dict[str, str] = {
    "person": "female or male",
    "people": "several_people",
    "background": "no_person",
    "object": "no_person",
    "noise": "no_person",
    "blank": "no_person",
    "blend": "abstain",
    "partial": "abstain",
}
SCENE_KINDS: tuple[str, ...] = tuple(SCENE_OUTCOMES)

#: The share of the figure's height a half-drawn ("partial") figure keeps, from the top: the head,
#: the shoulders and the top of the arms, above where the dress and the torso begin to differ.
PARTIAL_KEEP = (0.22, 0.34)


@dataclass(frozen=True)
class Scene:
    """The truth behind a judge-training or gate-test image (see :data:`SCENE_OUTCOMES`).

    ``genders`` holds one gender for ``person`` and ``partial``, two for ``people``; ``alpha``
    is the woman's weight in a ``blend`` (1 would be the woman alone). ``occupation`` is the
    background (``None`` for ``noise`` and ``blank``).
    """

    kind: str
    occupation: str | None = None
    genders: tuple[str, ...] = ()
    alpha: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in SCENE_OUTCOMES:
            raise InputError(f"unknown scene kind {self.kind!r}; choose one of {SCENE_KINDS}")
        if not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"alpha must lie in [0, 1]; got {self.alpha}")

    @property
    def p_woman(self) -> float | None:
        """The probability that a reader of the pixels should say "woman": 1 or 0 for one drawn
        figure, ``alpha`` for a blend, ½ for a half-drawn figure, ``None`` where nobody or
        several people are drawn."""
        if self.kind == "person":
            return 1.0 if self.genders[0] == "woman" else 0.0
        if self.kind == "blend":
            return self.alpha
        if self.kind == "partial":
            return 0.5
        return None


def _placement(rng: random.Random, k: float, *, h=(46, 56), cx=(26, 38)) -> tuple[float, float, float]:
    """``(cx, top, scale)`` in pixels for one figure: draws as :func:`draw_person` does."""
    hh = rng.randint(*h)
    x = rng.uniform(*cx)
    top = rng.uniform(3, IMAGE_SIZE - 3 - hh)
    return x * k, top * k, hh * k / 100.0


def draw_background(
    occupation: str, rng: random.Random, *, size: int = IMAGE_SIZE, accent: bool = False
) -> Image.Image:
    """An *occupation*'s background with nobody in it; with *accent*, its white hat or tool alone
    (no figure wearing or holding it) at a random place."""
    k = check_size(size)
    check_person("woman", occupation)
    img = Image.new("RGB", (size, size), OCCUPATION_BACKGROUNDS[occupation])
    if accent:
        cx, top, s = _placement(rng, k)
        draw_figure(ImageDraw.Draw(img), "woman", occupation, cx, top, s, figure=False)
    return img


def draw_people(
    genders: tuple[str, str], occupation: str, rng: random.Random, *, size: int = IMAGE_SIZE
) -> Image.Image:
    """Two pictograms side by side on an *occupation*'s background, each 36–44 units tall."""
    k = check_size(size)
    if len(genders) != 2:
        raise InputError(f"draw_people draws two figures; got genders {genders!r}")
    for g in genders:
        check_person(g, occupation)
    img = Image.new("RGB", (size, size), OCCUPATION_BACKGROUNDS[occupation])
    d = ImageDraw.Draw(img)
    for g, cx in zip(genders, ((15, 21), (43, 49))):
        draw_figure(d, g, occupation, *_placement(rng, k, h=(36, 44), cx=cx))
    return img


def draw_blend(occupation: str, rng: random.Random, *, alpha: float = 0.5, size: int = IMAGE_SIZE) -> Image.Image:
    """The woman's and the man's pictogram at the same place, mixed pixel by pixel with weight
    *alpha* on the woman (a figure whose gender no reader of the pixels can tell at ½)."""
    k = check_size(size)
    check_person("woman", occupation)
    place = _placement(rng, k)
    out = []
    for g in ("woman", "man"):
        img = Image.new("RGB", (size, size), OCCUPATION_BACKGROUNDS[occupation])
        draw_figure(ImageDraw.Draw(img), g, occupation, *place)
        out.append(img)
    return Image.blend(out[1], out[0], float(alpha))


def draw_partial(gender: str, occupation: str, rng: random.Random, *, size: int = IMAGE_SIZE) -> Image.Image:
    """A half-drawn figure: only the top :data:`PARTIAL_KEEP` of its height (head, shoulders, the
    top of the arms), the rest of the canvas background, as a generator that stopped drawing
    would leave it. The rows that tell the dress from the torso are not drawn."""
    k = check_size(size)
    check_person(gender, occupation)
    cx, top, s = _placement(rng, k)
    keep = rng.uniform(*PARTIAL_KEEP)
    full = Image.new("RGB", (size, size), OCCUPATION_BACKGROUNDS[occupation])
    draw_figure(ImageDraw.Draw(full), gender, occupation, cx, top, s)
    bare = Image.new("RGB", (size, size), OCCUPATION_BACKGROUNDS[occupation])
    draw_figure(ImageDraw.Draw(bare), gender, occupation, cx, top, s, figure=False)
    cut = int(round(top + keep * 100 * s))
    bare.paste(full.crop((0, 0, size, cut)), (0, 0))
    return bare


def draw_noise(rng: random.Random, *, size: int = IMAGE_SIZE) -> Image.Image:
    """Noise: a random colour with Gaussian pixel noise and a few random blobs (what a failed
    generation can look like), no figure."""
    check_size(size)
    g = np.random.default_rng(rng.randrange(2**32))
    base = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
    arr = base + g.normal(0, rng.uniform(10, 80), (size, size, 3))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(0, 4)):
        x, y, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(2, size / 6)
        d.ellipse([x - r, y - r, x + r, y + r], fill=tuple(rng.randint(0, 255) for _ in range(3)))
    return img


def draw_blank(rng: random.Random, *, size: int = IMAGE_SIZE) -> Image.Image:
    """One flat colour: white, grey, an occupation's background or any colour (not black: a
    black image is what a safety checker leaves, and the audit counts it apart)."""
    check_size(size)
    choice = rng.random()
    if choice < 0.25:
        c = SHAPE_BACKGROUND
    elif choice < 0.45:
        v = rng.randint(60, 230)
        c = (v, v, v)
    elif choice < 0.75:
        c = OCCUPATION_BACKGROUNDS[rng.choice(OCCUPATIONS)]
    else:
        c = tuple(rng.randint(30, 255) for _ in range(3))
    return Image.new("RGB", (size, size), c)


def sample_scene(rng: random.Random, kind: str | None = None, *, weights: Mapping[str, float] | None = None) -> Scene:
    """A random :class:`Scene` of *kind* (or of a kind drawn with *weights*). Genders are drawn
    50/50 in every occupation: no occupation–gender skew."""
    if kind is None:
        w = weights or dict.fromkeys(SCENE_KINDS, 1.0)
        kind = rng.choices(list(w), weights=list(w.values()))[0]
    occ = rng.choice(OCCUPATIONS)
    if kind in ("person", "partial"):
        return Scene(kind, occ, (rng.choice(("woman", "man")),))
    if kind == "people":
        return Scene(kind, occ, (rng.choice(("woman", "man")), rng.choice(("woman", "man"))))
    if kind == "blend":
        return Scene(kind, occ, alpha=rng.uniform(0.2, 0.8))
    if kind in ("noise", "blank"):
        return Scene(kind)
    return Scene(kind, occ)


def draw_scene(scene: Scene, rng: random.Random, *, size: int = IMAGE_SIZE) -> Image.Image:
    """Draw *scene* with *rng*, *size*² pixels."""
    kind = scene.kind
    if kind == "person":
        return draw_person(scene.genders[0], scene.occupation, rng, size=size)
    if kind == "people":
        return draw_people(scene.genders, scene.occupation, rng, size=size)
    if kind in ("background", "object"):
        return draw_background(scene.occupation, rng, size=size, accent=kind == "object")
    if kind == "blend":
        return draw_blend(scene.occupation, rng, alpha=scene.alpha, size=size)
    if kind == "partial":
        return draw_partial(scene.genders[0], scene.occupation, rng, size=size)
    if kind == "noise":
        return draw_noise(rng, size=size)
    return draw_blank(rng, size=size)


def scene_set(kind: str, n: int, *, seed: int = 0, size: int = IMAGE_SIZE, **fixed) -> list[tuple[Scene, Image.Image]]:
    """*n* seeded ``(scene, image)`` pairs of one *kind*; *fixed* overrides scene fields
    (``alpha=0.5`` for exact 50/50 blends)."""
    master = random.Random(f"diffkit-scenes:{kind}:{seed}")
    out = []
    for _ in range(n):
        rng = random.Random(master.getrandbits(63))
        scene = sample_scene(rng, kind)
        if fixed:
            scene = replace(scene, **fixed)
        out.append((scene, draw_scene(scene, rng, size=size)))
    return out
