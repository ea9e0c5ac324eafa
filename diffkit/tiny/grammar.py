"""The pictogram world's tables and caption grammar: colours, shapes, occupations and their
background colours, the BLS CPS 2021 women-share, caption templates, :class:`Attributes` and the
seeded sampling of (attributes, caption). Drawing is in :mod:`diffkit.tiny.drawing`; the public
face of all three is :mod:`diffkit.tiny.world`."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from PIL import Image

from ..errors import InputError

__all__ = [
    "ACCENT",
    "Attributes",
    "BLS_CPS_2021_WOMEN_SHARE",
    "BLS_TITLES",
    "COLORS",
    "GENDER_WORDS",
    "Gender",
    "IMAGE_SIZE",
    "IMAGE_SIZES",
    "Kind",
    "NEUTRAL_TEMPLATES",
    "OCCUPATIONS",
    "OCCUPATION_BACKGROUNDS",
    "PAIR_TEMPLATES",
    "RGB",
    "SHAPES",
    "SHAPE_BACKGROUND",
    "SHAPE_TEMPLATES",
    "SILHOUETTE",
    "STATED_TEMPLATES",
    "Sample",
    "WorldConfig",
    "all_attributes",
    "article",
    "neutral_captions",
    "pair_captions",
    "sample_attributes",
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
    return [t.format(gender_word=w, occupation=occupation) for t in STATED_TEMPLATES for w in GENDER_WORDS[gender]]


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
            raise InputError(f"women_share lacks occupations {sorted(missing)}; give a share for each of {OCCUPATIONS}")
        bad = {k: v for k, v in self.women_share.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise InputError(f"women_share values must lie in [0, 1]; got {bad}")
        for name in ("shape_fraction", "stated_fraction", "pair_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise InputError(f"{name} must lie in [0, 1]; got {v}")


def sample_attributes(rng: random.Random, config: WorldConfig | None = None) -> tuple[Attributes, str]:
    """Draw attributes and a caption per the world's caption distribution."""
    config = config or WorldConfig()
    if rng.random() < config.shape_fraction:
        # with pair_fraction 0 no extra number is drawn: diffkit-tiny 1's stream is unchanged
        if config.pair_fraction > 0 and rng.random() < config.pair_fraction:
            c1, c2 = rng.sample(list(COLORS), 2)
            a = Attributes("pair", color=c1, shape=rng.choice(SHAPES), color2=c2, shape2=rng.choice(SHAPES))
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


def all_attributes() -> list[Attributes]:
    """Every cell of the world: 24 shapes and 20 (occupation, gender) people."""
    out = [Attributes("shape", color=c, shape=s) for c in COLORS for s in SHAPES]
    out += [Attributes("person", occupation=o, gender=g) for o in OCCUPATIONS for g in ("woman", "man")]
    return out
