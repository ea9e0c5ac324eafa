from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image, ImageFilter

from diffkit.tiny import oracle
from diffkit.tiny import world as w


def _degrade(img, rng):
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.6)))
    arr = np.asarray(img, dtype=np.float32) + np.random.default_rng(rng.randrange(10**6)).normal(0, 8, (64, 64, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("degrade", [False, True], ids=["drawn", "blurred"])
def test_oracle_reads_every_cell(degrade):
    """100 % on drawn images, and on blurred noisy ones (a stand-in for generated images)."""
    rng = random.Random(0)
    wrong = []
    for a in w.all_attributes():
        for _ in range(25):
            img = w.draw(a, rng)
            if degrade:
                img = _degrade(img, rng)
            r = oracle.read(img)
            if not all(oracle.matches(r, a).values()):
                wrong.append((a, r))
    assert wrong == []


def test_world_samples_are_read_back():
    for s in w.sample_world(300, seed=5):
        assert all(oracle.matches(oracle.read(s.image), s.attributes).values()), s


def test_inputs_as_arrays():
    s = w.draw_sample(w.Attributes("person", occupation="lawyer", gender="man"), seed=2)
    arr = np.asarray(s.image)
    for x in (arr, arr.astype(np.float32) / 255.0, arr.transpose(2, 0, 1)):
        r = oracle.read(x)
        assert (r.gender, r.occupation) == ("man", "lawyer")


def test_empty_and_foreign_images():
    assert oracle.read(Image.new("RGB", (64, 64), "white")).kind == "none"
    r = oracle.read(Image.new("RGB", (64, 64), w.OCCUPATION_BACKGROUNDS["nurse"]))
    assert (r.kind, r.gender, r.occupation) == ("person", "none", "nurse")
    r = oracle.read(Image.new("RGB", (64, 64), (0, 0, 0)))
    assert r.occupation is None and r.gender == "none"
    r = oracle.read(w.draw_shape("blue", "circle", random.Random(0)).resize((128, 128)))
    assert (r.color, r.shape) == ("blue", "circle")
