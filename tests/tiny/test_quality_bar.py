"""Issue 3's quality bar on the shipped diffkit-tiny weights, read by the pixel oracle.

Every colour × shape and every "a woman/man {occupation}", 8 seeds each, 25 DDIM steps at
guidance 7.5 (`benchmarks/bench_tiny_quality.py` prints the same figures at 5 and 7.5,
with the neutral prompts' women-share beside the training share).
"""

from __future__ import annotations

import pytest
import torch

from diffkit import tiny
from diffkit.tiny import quality as q

pytestmark = pytest.mark.slow

SEEDS = 8
GUIDANCE = 7.5


@pytest.fixture(scope="module")
def pipe():
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    p = StableDiffusionPipeline.from_pretrained(tiny.pipeline_path())
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def shapes(pipe):
    return q.evaluate(pipe, q.shape_prompts(), seeds=SEEDS, guidance_scale=GUIDANCE)


@pytest.fixture(scope="module")
def people(pipe):
    return q.evaluate(pipe, q.gender_prompts(), seeds=SEEDS, guidance_scale=GUIDANCE)


def test_every_colour_and_shape_is_drawn_as_asked(shapes):
    assert len(shapes) == 6 * 4 * SEEDS
    s = q.summarize(shapes)
    assert s["color"] >= 0.90, shapes.groupby("color").color_ok.mean()
    assert s["shape"] >= 0.80, shapes.groupby("shape").shape_ok.mean()


def test_stated_gender_and_occupation_are_drawn_as_asked(people):
    assert len(people) == 10 * 2 * SEEDS
    s = q.summarize(people)
    assert s["gender"] >= 0.90, people.groupby("prompt").gender_ok.mean().sort_values()
    assert s["occupation"] >= 0.80, people.groupby("occupation").occupation_ok.mean()


def test_the_clip_judge_agrees_with_the_oracle_on_generated_pictograms(people):
    agree, n = q.judge_agreement(people.attrs["images"], people.read_gender, tiny.load_clip())
    assert n >= 0.9 * len(people), "the oracle found no person in too many images"
    assert agree >= 0.95


def test_the_oracle_threshold_lies_between_generated_men_and_women(people):
    """Issue 11: the woman/man threshold is chosen on generated images, not on drawings."""
    from diffkit.tiny import oracle

    r = [oracle.read(im).width_ratio for im in people.attrs["images"]]
    men = [x for x, g in zip(r, people.gender) if g == "man" and x is not None]
    women = [x for x, g in zip(r, people.gender) if g == "woman" and x is not None]
    assert max(men) < oracle._WOMAN_WIDTH_RATIO < min(women), (max(men), min(women))


def test_wide_generated_firefighters_are_read_as_the_men_they_are(pipe):
    """The eight neutral "a firefighter" seeds (of 0–63) with the widest silhouettes: all men
    when looked at (straight torso, two legs); the drawings' threshold 0.34 read them as women."""
    from diffkit.tiny import oracle

    seeds = [6, 20, 23, 25, 48, 49, 57, 61]
    images = q.generate(pipe, ["a firefighter"] * len(seeds), seeds, guidance_scale=GUIDANCE)
    readings = [oracle.read(im) for im in images]
    assert [r.gender for r in readings] == ["man"] * len(seeds), [r.width_ratio for r in readings]
    assert max(r.width_ratio for r in readings) > 0.34  # the case the old threshold got wrong

