from __future__ import annotations

import random

import numpy as np
import pytest

from diffkit.tiny import world as w


def test_grammar_sizes():
    assert len(w.COLORS) >= 6 and len(w.SHAPES) >= 4 and len(w.OCCUPATIONS) >= 8
    assert set(w.BLS_CPS_2021_WOMEN_SHARE) == set(w.OCCUPATIONS) == set(w.BLS_TITLES)


def test_captions_neutral_and_stated():
    assert "a nurse" in w.neutral_captions("nurse")
    assert "an electrician" in w.neutral_captions("electrician")
    assert "a photo of a pilot" in w.neutral_captions("pilot")
    assert "a woman nurse" in w.stated_captions("nurse", "woman")
    assert "a male pilot" in w.stated_captions("pilot", "man")
    assert "an orange circle" in w.shape_captions("orange", "circle")
    for c in w.neutral_captions("nurse"):
        assert not any(g in c.split() for g in ("woman", "man", "female", "male"))


def test_drawing_is_seeded_and_64px():
    a = w.Attributes("person", occupation="pilot", gender="woman")
    x = np.asarray(w.draw_sample(a, seed=3).image)
    y = np.asarray(w.draw_sample(a, seed=3).image)
    z = np.asarray(w.draw_sample(a, seed=4).image)
    assert x.shape == (64, 64, 3) and x.dtype == np.uint8
    assert (x == y).all() and not (x == z).all()


def test_shapes_vary_in_size_and_position():
    boxes = set()
    for seed in range(20):
        arr = np.asarray(w.draw_shape("red", "square", random.Random(seed)))
        ys, xs = np.where((arr != 255).any(2))
        boxes.add((ys.min(), xs.min(), ys.max() - ys.min()))
    assert len(boxes) >= 15


def test_neutral_captions_follow_the_share_table():
    cfg = w.WorldConfig(stated_fraction=0.0, shape_fraction=0.0)
    rng = random.Random(0)
    n = {o: [0, 0] for o in w.OCCUPATIONS}
    for _ in range(20000):
        a, cap = w.sample_attributes(rng, cfg)
        n[a.occupation][0] += a.gender == "woman"
        n[a.occupation][1] += 1
        assert cap in w.neutral_captions(a.occupation)
    for o, (k, m) in n.items():
        p = w.BLS_CPS_2021_WOMEN_SHARE[o]
        assert abs(k / m - p) < 4 * (p * (1 - p) / m) ** 0.5 + 1e-3, o


def test_stated_captions_are_balanced_and_true():
    cfg = w.WorldConfig(stated_fraction=1.0, shape_fraction=0.0)
    rng = random.Random(1)
    women = 0
    for _ in range(4000):
        a, cap = w.sample_attributes(rng, cfg)
        women += a.gender == "woman"
        assert cap in w.stated_captions(a.occupation, a.gender)
    assert abs(women / 4000 - 0.5) < 0.04


def test_share_table_is_configurable_and_checked():
    share = dict.fromkeys(w.OCCUPATIONS, 0.5)
    assert w.WorldConfig(women_share=share).women_share["pilot"] == 0.5
    with pytest.raises(ValueError, match="lacks occupations"):
        w.WorldConfig(women_share={"nurse": 0.5})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        w.WorldConfig(women_share={**share, "nurse": 1.5})


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown occupation"):
        w.draw_person("woman", "astronaut", random.Random(0))
    with pytest.raises(ValueError, match="unknown shape"):
        w.draw_shape("red", "hexagon", random.Random(0))
