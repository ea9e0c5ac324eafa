"""The recorder: ReverseChain observes the real ``pipe(...)`` (SD 3 here; SD and SDXL in test_reverse_chain.py).

Every comparison with the pipeline is exact equality: the chain's image is the pipeline's own.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from diffkit.reverse import FLOW_SCHEDULERS, ReverseChain, aggregate_attention
from diffkit.reverse.records import predicted_x0

PROMPT = "a photo of a red cube on a table"


@pytest.fixture(scope="module")
def sd3_pipe():
    from diffkit.testing import tiny_random_pipeline

    pipe = tiny_random_pipeline("sd3")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _init_image():
    from diffkit import sample_image

    return sample_image("chelsea", 32)


@pytest.mark.parametrize("name", sorted(FLOW_SCHEDULERS))
@pytest.mark.parametrize("w", [5.0, 1.0])
def test_sd3_equals_pipeline(sd3_pipe, ref, name, w):
    expected = ref(sd3_pipe, PROMPT, steps=3, guidance_scale=w, seed=2)
    chain = ReverseChain(
        sd3_pipe,
        PROMPT,
        steps=3,
        guidance_scale=w,
        seed=2,
        scheduler=name,
        height=32,
        width=32,
        record_dtype=torch.float32,
    )
    assert chain.do_cfg == (w > 1)
    traj = chain.run()
    np.testing.assert_array_equal(traj.image, expected)
    assert traj.info["prediction_type"] == "flow" and traj.info["denoiser"] == "transformer"
    for r in traj:
        assert r.prediction_type == "flow" and r.prediction_symbol == "v̂"
        # x̂_0 = x_t − σ_t v̂ (rectified flow), and ε̂ = x_t + (1 − σ) v̂
        torch.testing.assert_close(r.pred_original_sample, r.latents - r.sigma * r.noise_pred)
        torch.testing.assert_close(r.implied_eps(), r.latents + (1 - r.sigma) * r.noise_pred, atol=1e-4, rtol=1e-4)
        if w > 1:
            torch.testing.assert_close(
                r.noise_pred, r.noise_pred_uncond + w * (r.noise_pred_text - r.noise_pred_uncond)
            )
        else:
            assert r.noise_pred_uncond is None
    assert [r.sigma for r in traj] == sorted((r.sigma for r in traj), reverse=True)


def test_sd3_img2img_equals_img2img_pipeline(sd3_pipe, ref):
    from diffusers import StableDiffusion3Img2ImgPipeline

    i2i = StableDiffusion3Img2ImgPipeline.from_pipe(sd3_pipe)
    i2i.set_progress_bar_config(disable=True)
    image = _init_image()
    expected = ref(i2i, PROMPT, steps=4, guidance_scale=4.0, image=image, strength=0.5)
    traj = ReverseChain(sd3_pipe, PROMPT, steps=4, guidance_scale=4.0, image=image, strength=0.5).run()
    assert len(traj) == 2 and traj.info["img2img"]
    np.testing.assert_array_equal(traj.image, expected)


def test_sd3_joint_attention_maps_per_token_and_step(sd3_pipe):
    chain = ReverseChain(sd3_pipe, "a red cube", steps=2, height=32, width=32, capture_attention=True)
    traj = chain.run()
    n = chain.tokens.n_tokens
    for r in traj:
        assert sorted(r.attention) == ["transformer_blocks.0.attn", "transformer_blocks.1.attn"]
        for m in r.attention.values():
            assert tuple(m.shape) == (n, 16, 16)
            # a softmax over the text keys (prompt positions kept): at most one unit per pixel
            assert float(m.float().sum(0).max()) <= 1.0 + 1e-3 and float(m.min()) >= 0
    red = aggregate_attention(traj, chain.tokens.index("red"))
    assert tuple(red.shape) == (16, 16)
    # capturing changes nothing
    plain = ReverseChain(sd3_pipe, "a red cube", steps=2, height=32, width=32).run()
    np.testing.assert_array_equal(plain.image, traj.image)


def test_sd3_rejects_sd_schedulers_and_sd_only_options(sd3_pipe):
    with pytest.raises(
        ValueError, match=r"unknown scheduler 'ddim' for StableDiffusion3Pipeline; fix: choose one of \['flow_euler'\]"
    ):
        ReverseChain(sd3_pipe, PROMPT, scheduler="ddim")
    with pytest.raises(ValueError, match="eta and guidance_rescale apply to SD and SDXL"):
        ReverseChain(sd3_pipe, PROMPT, guidance_rescale=0.5, height=32, width=32)


def test_ddpm_with_clip_sample_equals_pipeline(sd_pipe, ref):
    """diffusers' __init__ turns clip_sample off; the chain never rebuilds the pipeline, so it keeps it."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(sd_pipe.scheduler.config, clip_sample=True)
    assert sched.config.clip_sample is True
    old = sd_pipe.scheduler
    sd_pipe.scheduler = sched
    try:
        expected = ref(sd_pipe, PROMPT, steps=4, guidance_scale=7.5, seed=1)
        chain = ReverseChain(sd_pipe, PROMPT, steps=4, guidance_scale=7.5, seed=1, height=32, width=32)
        traj = chain.run()
    finally:
        sd_pipe.scheduler = old
    assert chain.scheduler.config.clip_sample is True and sched.config.clip_sample is True
    np.testing.assert_array_equal(traj.image, expected)
    assert all(float(r.pred_original_sample.float().abs().max()) <= 1.0 for r in traj)  # clipped x̂_0


def test_img2img_from_a_txt2img_pipeline_leaves_its_scheduler_config_alone(sd_pipe):
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(sd_pipe.scheduler.config, clip_sample=True)
    old = sd_pipe.scheduler
    sd_pipe.scheduler = sched
    try:
        ReverseChain(sd_pipe, PROMPT, steps=2, image=_init_image(), strength=1.0).run()
    finally:
        sd_pipe.scheduler = old
    assert sched.config.clip_sample is True  # from_pipe's __init__ rewrote a throwaway copy only


def test_epsilon_and_v_records_say_what_the_model_predicts(ref):
    from diffkit.testing import tiny_random_pipeline

    for pt, symbol in (("epsilon", "ε̂"), ("v_prediction", "v̂")):
        pipe = tiny_random_pipeline("sd", prediction_type=pt)
        traj = ReverseChain(
            pipe, PROMPT, steps=2, scheduler="ddim", height=32, width=32, record_dtype=torch.float32
        ).run()
        for r in traj:
            assert r.prediction_type == pt and r.prediction_symbol == symbol
            # ε̂ implied by x_t and x̂_0 gives back x̂_0 through the ε formula
            x0 = predicted_x0(r.implied_eps(), r.latents, alpha_bar=r.alpha_bar)
            torch.testing.assert_close(x0, r.pred_original_sample, atol=1e-5, rtol=1e-5)


def test_cancel_pauses_and_close_releases_the_pipeline(sd_pipe):
    import gc
    import threading

    chain = ReverseChain(sd_pipe, PROMPT, steps=3, height=32, width=32)
    next(chain)
    before = threading.active_count()
    chain.close()
    for _ in range(100):
        if threading.active_count() < before:
            break
        threading.Event().wait(0.02)
    assert threading.active_count() < before
    assert not sd_pipe.unet._forward_hooks and not sd_pipe.unet._forward_pre_hooks  # every hook removed
    # an abandoned chain is collected and its worker ends too
    ReverseChain(sd_pipe, PROMPT, steps=3, height=32, width=32)
    gc.collect()
    for _ in range(100):
        if not sd_pipe.unet._forward_pre_hooks:
            break
        threading.Event().wait(0.02)
    assert not sd_pipe.unet._forward_pre_hooks


def test_no_private_diffusers_api_in_reverse():
    src = Path(__file__).resolve().parents[2] / "diffkit" / "reverse"
    private = re.compile(r"\b(?:pipe|work|sched|scheduler|self\.scheduler|unet|transformer|vae)\._[a-z]\w*")
    found = {p.name: private.findall(p.read_text()) for p in src.glob("*.py")}
    assert {k: v for k, v in found.items() if v} == {}
    assert "_get_add_time_ids" not in "".join(p.read_text() for p in src.glob("*.py"))


def test_diffusers_version_is_the_one_under_test():
    """``make test-compat`` sets DIFFKIT_EXPECT_DIFFUSERS: the run must really import that version."""
    import os

    import diffusers

    want = os.environ.get("DIFFKIT_EXPECT_DIFFUSERS")
    if want is not None:
        assert diffusers.__version__ == want
    lowest = re.search(r'"diffusers>=([\d.]+)"', (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert lowest is not None
    assert tuple(map(int, diffusers.__version__.split(".")[:2])) >= tuple(map(int, lowest.group(1).split(".")[:2]))
