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
    return q.evaluate(pipe, q.shape_prompts(), seeds=SEEDS, guidance=GUIDANCE)


@pytest.fixture(scope="module")
def people(pipe):
    return q.evaluate(pipe, q.gender_prompts(), seeds=SEEDS, guidance=GUIDANCE)


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
