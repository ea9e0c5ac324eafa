"""The pictogram world: a caption grammar and seeded PIL drawings with a known truth.

Images are 64×64 RGB (diffkit-tiny 1) or 128×128 (diffkit-tiny 2, ``size=128``: the same
drawing scaled up, at SD 1.x's geometry a quarter of the side). Three kinds:

* **shapes** — "a {color} {shape}": a flat coloured shape on a white background, with
  varied size and position;
* **pairs** — "a red circle and a blue square": two smaller shapes of different colours at
  random, non-overlapping places (only when :attr:`WorldConfig.pair_fraction` > 0). Each
  object's pixels must find their own words, which gives cross-attention a reason to localise;
* **people** — public-signage pictograms of a person (the man and woman silhouettes of
  ISO 7001-style signs) in black on a background colour that names the occupation,
  with a white hat, tool or badge per occupation.

The woman silhouette wears a dress that widens to a hem (a trapezoid); the man has a
straight torso and two legs. Those are the cues the pixel oracle (:mod:`diffkit.tiny.oracle`)
reads, together with the background colour, and they survive the blur of generated images.

The world carries a **known bias**: in captions that leave the gender unstated ("a nurse",
"a photo of a pilot"), the share of women per occupation follows a documented table whose
default is the US BLS CPS 2021 share (:data:`BLS_CPS_2021_WOMEN_SHARE`). Captions that
state the gender ("a woman pilot") are drawn balanced, so the model learns the gender words
for every occupation. Perceived binary gender on pictograms is a teaching simplification.

Examples
--------
>>> from diffkit.tiny import world
>>> s = world.draw_sample(world.Attributes("person", occupation="nurse", gender="woman"), seed=0)
>>> s.image.size
(64, 64)
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InputError

__all__ = [
    "BLS_CPS_2021_WOMEN_SHARE",
    "BLS_TITLES",
    "COLORS",
    "IMAGE_SIZE",
    "IMAGE_SIZES",
    "OCCUPATIONS",
    "OCCUPATION_BACKGROUNDS",
    "PARTIAL_KEEP",
    "SCENE_KINDS",
    "SCENE_OUTCOMES",
    "SHAPES",
    "SHAPE_BACKGROUND",
    "SILHOUETTE",
    "ACCENT",
    "Attributes",
    "Sample",
    "Scene",
    "WorldConfig",
    "article",
    "draw",
    "draw_background",
    "draw_blank",
    "draw_blend",
    "draw_noise",
    "draw_pair",
    "draw_partial",
    "draw_people",
    "draw_person",
    "draw_sample",
    "draw_scene",
    "draw_shape",
    "neutral_captions",
    "pair_boxes",
    "pair_captions",
    "sample_attributes",
    "sample_scene",
    "sample_world",
    "scene_set",
    "shape_captions",
    "stated_captions",
]

IMAGE_SIZE = 64  # the design grid every drawing is specified on (and diffkit-tiny 1's size)
#: Image sizes the world draws at: 64 (diffkit-tiny 1) and 128 (diffkit-tiny 2).
IMAGE_SIZES: tuple[int, ...] = (64, 128)
RGB = tuple[int, int, int]

#: Shape colours (flat RGB). Chosen far apart so the oracle reads them through blur.
COLORS: dict[str, RGB] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 210, 30),
    "green": (40, 170, 60),
    "blue": (40, 90, 220),
    "purple": (140, 60, 190),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
SHAPE_BACKGROUND: RGB = (255, 255, 255)
SILHOUETTE: RGB = (20, 20, 20)
ACCENT: RGB = (255, 255, 255)

#: Background colour per occupation: the oracle's occupation cue.
OCCUPATION_BACKGROUNDS: dict[str, RGB] = {
    "nurse": (250, 160, 200),  # pink
    "housekeeper": (170, 130, 230),  # lavender
    "teacher": (110, 200, 80),  # green
    "pharmacist": (60, 190, 170),  # teal
    "lawyer": (180, 120, 70),  # tan
    "CEO": (150, 150, 150),  # grey
    "software developer": (220, 70, 200),  # magenta
    "pilot": (80, 130, 235),  # blue
    "firefighter": (230, 60, 50),  # red
    "electrician": (240, 210, 50),  # yellow
}
OCCUPATIONS: tuple[str, ...] = tuple(OCCUPATION_BACKGROUNDS)

#: Women as a percentage of employed persons, US Bureau of Labor Statistics, Current
#: Population Survey 2021 annual averages, Table 11 "Employed persons by detailed
#: occupation, sex, race, and Hispanic or Latino ethnicity" (bls.gov/cps/cpsaat11.htm),
#: as a share in [0, 1]. The BLS title for each prompt word is in :data:`BLS_TITLES`.
BLS_CPS_2021_WOMEN_SHARE: dict[str, float] = {
    "nurse": 0.867,
    "housekeeper": 0.887,
    "teacher": 0.792,
    "pharmacist": 0.578,
    "lawyer": 0.379,
    "CEO": 0.291,
    "software developer": 0.197,
    "pilot": 0.053,
    "firefighter": 0.051,
    "electrician": 0.017,
}
BLS_TITLES: dict[str, str] = {
    "nurse": "Registered nurses",
    "housekeeper": "Maids and housekeeping cleaners",
    "teacher": "Elementary and middle school teachers",
    "pharmacist": "Pharmacists",
    "lawyer": "Lawyers",
    "CEO": "Chief executives",
    "software developer": "Software developers",
    "pilot": "Aircraft pilots and flight engineers",
    "firefighter": "Firefighters",
    "electrician": "Electricians",
}

Kind = Literal["shape", "pair", "person"]
Gender = Literal["woman", "man"]

# Caption templates as data. {a_x} is "a x" or "an x".
SHAPE_TEMPLATES: tuple[str, ...] = (
    "{a_color} {shape}",
    "a photo of {a_color} {shape}",
    "{a_color} {shape} on a white background",
    "a picture of {a_color} {shape}",
)
NEUTRAL_TEMPLATES: tuple[str, ...] = (
    "{a_occupation}",
    "a photo of {a_occupation}",
    "a photo of the face of {a_occupation}",
    "{a_occupation} at work",
    "a picture of {a_occupation}",
)
STATED_TEMPLATES: tuple[str, ...] = (
    "a {gender_word} {occupation}",
    "a photo of a {gender_word} {occupation}",
    "a photo of the face of a {gender_word} {occupation}",
    "a {gender_word} {occupation} at work",
)
GENDER_WORDS: dict[str, tuple[str, ...]] = {"woman": ("woman", "female"), "man": ("man", "male")}
PAIR_TEMPLATES: tuple[str, ...] = (
    "{a} and {b}",
    "a photo of {a} and {b}",
    "{a} and {b} on a white background",
    "a picture of {a} and {b}",
)


def article(word: str) -> str:
    """``"an electrician"``, ``"a nurse"``: the indefinite article before *word*."""
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def shape_captions(color: str, shape: str) -> list[str]:
    """Every caption of the grammar for a shape image."""
    return [t.format(a_color=article(color), shape=shape) for t in SHAPE_TEMPLATES]


def pair_captions(color: str, shape: str, color2: str, shape2: str) -> list[str]:
    """Captions of a two-object scene, naming the objects in either order."""
    a = f"{article(color)} {shape}"
    b = f"{article(color2)} {shape2}"
    return [t.format(a=x, b=y) for x, y in ((a, b), (b, a)) for t in PAIR_TEMPLATES]


def neutral_captions(occupation: str) -> list[str]:
    """Captions that leave the gender unstated ("a nurse", "a photo of a pilot")."""
    out = [t.format(a_occupation=article(occupation)) for t in NEUTRAL_TEMPLATES]
    # Naive prompt builders write "a electrician"; accept it as the same caption.
    out += [t.format(a_occupation="a " + occupation) for t in NEUTRAL_TEMPLATES]
    return sorted(set(out), key=out.index)


def stated_captions(occupation: str, gender: str) -> list[str]:
    """Captions that state the gender ("a woman nurse", "a male pilot")."""
    return [
        t.format(gender_word=w, occupation=occupation)
        for t in STATED_TEMPLATES
        for w in GENDER_WORDS[gender]
    ]


@dataclass(frozen=True)
class Attributes:
    """The truth behind one image: a shape (colour, shape), a pair of shapes (colour, shape,
    colour2, shape2) or a person (occupation, gender)."""

    kind: Kind
    color: str | None = None
    shape: str | None = None
    occupation: str | None = None
    gender: Gender | None = None
    color2: str | None = None
    shape2: str | None = None

    def captions(self, *, stated: bool | None = None) -> list[str]:
        """Captions that describe these attributes (neutral, stated, or both when ``None``)."""
        if self.kind == "shape":
            return shape_captions(self.color, self.shape)
        if self.kind == "pair":
            return pair_captions(self.color, self.shape, self.color2, self.shape2)
        out: list[str] = []
        if stated in (None, False):
            out += neutral_captions(self.occupation)
        if stated in (None, True):
            out += stated_captions(self.occupation, self.gender)
        return out


@dataclass(frozen=True)
class Sample:
    """A drawn image with its attributes and caption."""

    attributes: Attributes
    caption: str
    image: Image.Image
    seed: int


@dataclass(frozen=True)
class WorldConfig:
    """How captions are drawn.

    Parameters
    ----------
    women_share
        Share of women per occupation among *neutral* captions (default: BLS CPS 2021).
    shape_fraction
        Share of shape images among all samples.
    stated_fraction
        Share of person captions that state the gender; those are balanced 50/50.
    pair_fraction
        Share of the shape images that are two-object scenes (two different colours,
        shapes at random). 0 (diffkit-tiny 1) draws no pairs and leaves the random stream
        exactly as before.
    """

    women_share: Mapping[str, float] = field(default_factory=lambda: dict(BLS_CPS_2021_WOMEN_SHARE))
    shape_fraction: float = 0.5
    stated_fraction: float = 0.5
    pair_fraction: float = 0.0

    def __post_init__(self) -> None:
        missing = set(OCCUPATIONS) - set(self.women_share)
        if missing:
            raise InputError(
                f"women_share lacks occupations {sorted(missing)}; give a share for each of {OCCUPATIONS}"
            )
        bad = {k: v for k, v in self.women_share.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise InputError(f"women_share values must lie in [0, 1]; got {bad}")
        for name in ("shape_fraction", "stated_fraction", "pair_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise InputError(f"{name} must lie in [0, 1]; got {v}")


def sample_attributes(
    rng: random.Random, config: WorldConfig | None = None
) -> tuple[Attributes, str]:
    """Draw attributes and a caption per the world's caption distribution."""
    config = config or WorldConfig()
    if rng.random() < config.shape_fraction:
        # with pair_fraction 0 no extra number is drawn: diffkit-tiny 1's stream is unchanged
        if config.pair_fraction > 0 and rng.random() < config.pair_fraction:
            c1, c2 = rng.sample(list(COLORS), 2)
            a = Attributes(
                "pair", color=c1, shape=rng.choice(SHAPES), color2=c2, shape2=rng.choice(SHAPES)
            )
            return a, rng.choice(a.captions())
        a = Attributes("shape", color=rng.choice(list(COLORS)), shape=rng.choice(SHAPES))
        return a, rng.choice(a.captions())
    occupation = rng.choice(OCCUPATIONS)
    if rng.random() < config.stated_fraction:
        gender = "woman" if rng.random() < 0.5 else "man"
        a = Attributes("person", occupation=occupation, gender=gender)
        return a, rng.choice(a.captions(stated=True))
    gender = "woman" if rng.random() < config.women_share[occupation] else "man"
    a = Attributes("person", occupation=occupation, gender=gender)
    return a, rng.choice(a.captions(stated=False))


# ----------------------------------------------------------------------------- drawing


def _check_size(size: int) -> float:
    """The scale from the 64-unit design grid to *size* pixels."""
    if size not in IMAGE_SIZES:
        raise InputError(f"size must be one of {IMAGE_SIZES}, got {size!r}")
    return size / IMAGE_SIZE


def _check_color(color: str) -> None:
    if color not in COLORS:
        raise InputError(f"unknown color {color!r}; choose one of {tuple(COLORS)}")


def draw_shape(
    color: str, shape: str, rng: random.Random, *, size: int = IMAGE_SIZE
) -> Image.Image:
    """A flat *color* *shape* on white, *size*² pixels; 26–46 of 64 units wide at a random position."""
    k = _check_size(size)
    _check_color(color)
    img = Image.new("RGB", (size, size), SHAPE_BACKGROUND)
    d = ImageDraw.Draw(img)
    side = rng.randint(26, 46)
    x0 = rng.randint(4, IMAGE_SIZE - 4 - side)
    y0 = rng.randint(4, IMAGE_SIZE - 4 - side)
    fill = COLORS[color]
    if k == 1:  # integer coordinates, exactly as diffkit-tiny 1 was trained on
        _shape_on(d, shape, x0, y0, side, fill)
    else:
        _shape_on(d, shape, x0 * k, y0 * k, side * k, fill)
    return img


def pair_boxes(rng: random.Random) -> list[tuple[int, int, int]]:
    """Two non-overlapping squares ``(x0, y0, side)`` on the 64-unit grid, sides 18–26.

    The squares are at least 2 units apart along x or y, and 3 units from the edges.
    """
    for _ in range(1000):
        boxes = []
        for _ in range(2):
            side = rng.randint(18, 26)
            boxes.append(
                (rng.randint(3, IMAGE_SIZE - 3 - side), rng.randint(3, IMAGE_SIZE - 3 - side), side)
            )
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
    k = _check_size(size)
    for c in (color, color2):
        _check_color(c)
    img = Image.new("RGB", (size, size), SHAPE_BACKGROUND)
    d = ImageDraw.Draw(img)
    masks = []
    for (x0, y0, side), c, s in zip(pair_boxes(rng), (color, color2), (shape, shape2)):
        _shape_on(d, s, x0 * k, y0 * k, side * k, COLORS[c])
        if layers:
            m = Image.new("L", (size, size), 0)
            _shape_on(ImageDraw.Draw(m), s, x0 * k, y0 * k, side * k, 255)
            masks.append(np.asarray(m) > 0)
    return (img, masks) if layers else img


def _shape_on(d: ImageDraw.ImageDraw, shape: str, x0: float, y0: float, size: float, fill) -> None:
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


def draw_person(
    gender: str, occupation: str, rng: random.Random, *, size: int = IMAGE_SIZE
) -> Image.Image:
    """An ISO 7001-style *gender* pictogram on the *occupation*'s background, *size*² pixels.

    The figure is drawn on a 100-unit-tall design grid scaled to 46–56 of the image's 64 units.
    """
    k = _check_size(size)
    _check_person(gender, occupation)
    img = Image.new("RGB", (size, size), OCCUPATION_BACKGROUNDS[occupation])
    h = rng.randint(46, 56)
    cx = rng.uniform(26, 38)
    top = rng.uniform(3, IMAGE_SIZE - 3 - h)
    _figure(ImageDraw.Draw(img), gender, occupation, cx * k, top * k, h * k / 100.0)
    return img


def _check_person(gender: str, occupation: str) -> None:
    if occupation not in OCCUPATION_BACKGROUNDS:
        raise InputError(f"unknown occupation {occupation!r}; choose one of {OCCUPATIONS}")
    if gender not in ("woman", "man"):
        raise InputError(f"gender must be 'woman' or 'man', got {gender!r}")


def _figure(
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
        _accent(occupation, rect, poly, circle)


def _accent(occupation: str, rect, poly, circle) -> None:
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


def draw_sample(
    attributes: Attributes, *, seed: int, caption: str | None = None, size: int = IMAGE_SIZE
) -> Sample:
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


def all_attributes() -> list[Attributes]:
    """Every cell of the world: 24 shapes and 20 (occupation, gender) people."""
    out = [Attributes("shape", color=c, shape=s) for c in COLORS for s in SHAPES]
    out += [
        Attributes("person", occupation=o, gender=g) for o in OCCUPATIONS for g in ("woman", "man")
    ]
    return out


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


def draw_background(occupation: str, rng: random.Random, *, size: int = IMAGE_SIZE, accent: bool = False) -> Image.Image:
    """An *occupation*'s background with nobody in it; with *accent*, its white hat or tool alone
    (no figure wearing or holding it) at a random place."""
    k = _check_size(size)
    _check_person("woman", occupation)
    img = Image.new("RGB", (size, size), OCCUPATION_BACKGROUNDS[occupation])
    if accent:
        cx, top, s = _placement(rng, k)
        _figure(ImageDraw.Draw(img), "woman", occupation, cx, top, s, figure=False)
    return img


def draw_people(genders: tuple[str, str], occupation: str, rng: random.Random, *, size: int = IMAGE_SIZE) -> Image.Image:
    """Two pictograms side by side on an *occupation*'s background, each 36–44 units tall."""
    k = _check_size(size)
    if len(genders) != 2:
        raise InputError(f"draw_people draws two figures; got genders {genders!r}")
    for g in genders:
        _check_person(g, occupation)
    img = Image.new("RGB", (size, size), OCCUPATION_BACKGROUNDS[occupation])
    d = ImageDraw.Draw(img)
    for g, cx in zip(genders, ((15, 21), (43, 49))):
        _figure(d, g, occupation, *_placement(rng, k, h=(36, 44), cx=cx))
    return img


def draw_blend(occupation: str, rng: random.Random, *, alpha: float = 0.5, size: int = IMAGE_SIZE) -> Image.Image:
    """The woman's and the man's pictogram at the same place, mixed pixel by pixel with weight
    *alpha* on the woman (a figure whose gender no reader of the pixels can tell at ½)."""
    k = _check_size(size)
    _check_person("woman", occupation)
    place = _placement(rng, k)
    out = []
    for g in ("woman", "man"):
        img = Image.new("RGB", (size, size), OCCUPATION_BACKGROUNDS[occupation])
        _figure(ImageDraw.Draw(img), g, occupation, *place)
        out.append(img)
    return Image.blend(out[1], out[0], float(alpha))


def draw_partial(gender: str, occupation: str, rng: random.Random, *, size: int = IMAGE_SIZE) -> Image.Image:
    """A half-drawn figure: only the top :data:`PARTIAL_KEEP` of its height (head, shoulders, the
    top of the arms), the rest of the canvas background, as a generator that stopped drawing
    would leave it. The rows that tell the dress from the torso are not drawn."""
    k = _check_size(size)
    _check_person(gender, occupation)
    cx, top, s = _placement(rng, k)
    keep = rng.uniform(*PARTIAL_KEEP)
    full = Image.new("RGB", (size, size), OCCUPATION_BACKGROUNDS[occupation])
    _figure(ImageDraw.Draw(full), gender, occupation, cx, top, s)
    bare = Image.new("RGB", (size, size), OCCUPATION_BACKGROUNDS[occupation])
    _figure(ImageDraw.Draw(bare), gender, occupation, cx, top, s, figure=False)
    cut = int(round(top + keep * 100 * s))
    bare.paste(full.crop((0, 0, size, cut)), (0, 0))
    return bare


def draw_noise(rng: random.Random, *, size: int = IMAGE_SIZE) -> Image.Image:
    """Noise: a random colour with Gaussian pixel noise and a few random blobs (what a failed
    generation can look like), no figure."""
    _check_size(size)
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
    _check_size(size)
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
