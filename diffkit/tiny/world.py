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

from diffkit.tiny.drawing import (  # noqa: F401
    check_person,
    check_size,
    draw,
    draw_accent,
    draw_figure,
    draw_pair,
    draw_person,
    draw_sample,
    draw_shape,
    draw_shape_on,
    pair_boxes,
    sample_world,
)
from diffkit.tiny.grammar import (  # noqa: F401
    ACCENT,
    BLS_CPS_2021_WOMEN_SHARE,
    BLS_TITLES,
    COLORS,
    GENDER_WORDS,
    IMAGE_SIZE,
    IMAGE_SIZES,
    NEUTRAL_TEMPLATES,
    OCCUPATION_BACKGROUNDS,
    OCCUPATIONS,
    PAIR_TEMPLATES,
    RGB,
    SHAPE_BACKGROUND,
    SHAPE_TEMPLATES,
    SHAPES,
    SILHOUETTE,
    STATED_TEMPLATES,
    Attributes,
    Gender,
    Kind,
    Sample,
    WorldConfig,
    all_attributes,
    article,
    neutral_captions,
    pair_captions,
    sample_attributes,
    shape_captions,
    stated_captions,
)
from diffkit.tiny.scenes import (  # noqa: F401
    PARTIAL_KEEP,
    SCENE_KINDS,
    SCENE_OUTCOMES,
    Scene,
    draw_background,
    draw_blank,
    draw_blend,
    draw_noise,
    draw_partial,
    draw_people,
    draw_scene,
    sample_scene,
    scene_set,
)

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
    "all_attributes",
]
