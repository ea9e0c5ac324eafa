"""ReverseChain against the pipelines themselves, on tiny random SD and SDXL pipelines (SD 3: test_recorder.py).

The chain records the real ``pipe(...)``, so every comparison with the pipeline is exact equality.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffkit.pipeline import SCHEDULERS, make_scheduler
from diffkit.reverse import (
    NonFiniteLatentsError,
    PromptTruncatedWarning,
    ReverseChain,
    predicted_x0,
)

PROMPT = "a photo of a red cube on a table"


def _steps(name: str) -> int:
    return 4 if name == "pndm" else 3  # PNDM's Runge–Kutta warm-up needs 4 steps


# ---------------------------------------------------------------------------------------
# 1. Identical to the pipeline
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_final_image_equals_pipeline(pipes, ref, kind, name):
    pipe = pipes[kind]
    steps = _steps(name)
    expected = ref(pipe, PROMPT, steps=steps, guidance_scale=7.5, seed=3, scheduler=name)
    traj = ReverseChain(
        pipe, PROMPT, steps=steps, guidance_scale=7.5, seed=3, scheduler=name, height=32, width=32
    ).run()
    assert traj.complete
    assert traj.image.shape == expected.shape
    np.testing.assert_array_equal(traj.image, expected)  # identity, not closeness
    # one record per entry of scheduler.timesteps; x̂_0 everywhere
    assert len(traj) == traj.info["n_calls"]
    assert all(torch.isfinite(r.pred_original_sample.float()).all() for r in traj)


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
@pytest.mark.parametrize("w", [1.0, 0.5, 0.0])
def test_guidance_at_most_one_skips_unconditional_branch(pipes, ref, kind, w):
    pipe = pipes[kind]
    expected = ref(pipe, PROMPT, steps=2, guidance_scale=w, scheduler="ddim")
    chain = ReverseChain(pipe, PROMPT, steps=2, guidance_scale=w, scheduler="ddim", height=32, width=32)
    assert not chain.do_cfg
    traj = chain.run()
    np.testing.assert_array_equal(traj.image, expected)  # identity, not closeness
    r = traj[0]
    assert r.noise_pred_uncond is None and r.guidance_delta is None
    assert torch.equal(r.noise_pred, r.noise_pred_text)
    assert "eps_uncond" not in r.stats


@pytest.mark.parametrize(
    ("kind", "name"), [("sd", "ddim"), ("sd", "euler"), ("sd", "dpm_solver"), ("sdxl", "heun"), ("sdxl", "unipc")]
)
def test_v_prediction_equals_pipeline(ref, kind, name):
    from diffkit.testing import tiny_random_pipeline

    pipe = tiny_random_pipeline(kind, prediction_type="v_prediction")
    pipe.set_progress_bar_config(disable=True)
    expected = ref(pipe, PROMPT, steps=3, guidance_scale=5.0, scheduler=name)
    traj = ReverseChain(pipe, PROMPT, steps=3, guidance_scale=5.0, scheduler=name, height=32, width=32).run()
    assert traj.info["prediction_type"] == "v_prediction"
    np.testing.assert_array_equal(traj.image, expected)  # identity, not closeness


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_negative_prompt_and_guidance_rescale_equal_pipeline(pipes, ref, kind):
    pipe = pipes[kind]
    kw = dict(negative_prompt="blurry, dark", guidance_rescale=0.7)
    expected = ref(pipe, PROMPT, steps=3, guidance_scale=6.0, scheduler="euler_ancestral", **kw)
    traj = ReverseChain(
        pipe, PROMPT, steps=3, guidance_scale=6.0, scheduler="euler_ancestral", height=32, width=32, **kw
    ).run()
    np.testing.assert_array_equal(traj.image, expected)  # identity, not closeness


def test_non_square_size_and_generator_seed(sd_pipe, ref):
    with_gen = ReverseChain(
        sd_pipe, PROMPT, steps=2, seed=torch.Generator().manual_seed(5), height=32, width=48, scheduler="euler"
    )
    traj = with_gen.run()
    expected = ref(sd_pipe, PROMPT, steps=2, guidance_scale=7.5, seed=5, scheduler="euler", height=32, width=48)
    assert traj.image.shape == (32, 48, 3)
    np.testing.assert_array_equal(traj.image, expected)  # identity, not closeness


# ---------------------------------------------------------------------------------------
# 2. img2img: the forward chain noises the image, the reverse chain takes it from there
# ---------------------------------------------------------------------------------------


def _init_image():
    from diffkit import sample_image

    return sample_image("chelsea", 32)


@pytest.mark.parametrize(("kind", "name"), [("sd", "ddim"), ("sd", "heun"), ("sdxl", "euler"), ("sdxl", "dpm_solver")])
def test_img2img_equals_img2img_pipeline(pipes, ref, kind, name):
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline

    pipe = pipes[kind]
    cls = StableDiffusionImg2ImgPipeline if kind == "sd" else StableDiffusionXLImg2ImgPipeline
    extra = {"requires_safety_checker": False} if kind == "sd" else {}
    i2i = cls(**pipe.components, **extra)
    i2i.set_progress_bar_config(disable=True)
    image = _init_image()
    expected = ref(i2i, "a watercolour cat", steps=4, guidance_scale=7.0, scheduler=name, image=image, strength=0.6)
    chain = ReverseChain(
        pipe, "a watercolour cat", steps=4, guidance_scale=7.0, scheduler=name, image=image, strength=0.6
    )
    traj = chain.run()
    assert traj.info["img2img"] and traj.info["strength"] == 0.6
    # int(4 × 0.6) = 2 of the 4 steps run (Heun: 2 per step but the first)
    assert len(traj) == (3 if name == "heun" else 2)
    np.testing.assert_array_equal(traj.image, expected)  # identity, not closeness


def test_img2img_resizes_the_image_to_height_and_width(sd_pipe, ref):
    """img2img pipelines draw at their image's size and ignored height/width: the chain now resizes
    the image first with the pipeline's own image_processor, and equals pipe(image=resized)."""
    from diffusers import StableDiffusionImg2ImgPipeline

    i2i = StableDiffusionImg2ImgPipeline(**sd_pipe.components, requires_safety_checker=False)
    i2i.set_progress_bar_config(disable=True)
    image = _init_image()  # 32 × 32
    expected = ref(
        i2i, PROMPT, steps=4, guidance_scale=7.5, image=i2i.image_processor.resize(image, 48, 64), strength=0.5
    )
    traj = ReverseChain(sd_pipe, PROMPT, steps=4, image=image, strength=0.5, height=48, width=64).run()
    assert traj.image.shape == (48, 64, 3) and (traj.info["height"], traj.info["width"]) == (48, 64)
    np.testing.assert_array_equal(traj.image, expected)  # identity, not closeness


def test_img2img_with_an_img2img_pipeline_and_default_strength(sd_pipe, ref):
    from diffusers import StableDiffusionImg2ImgPipeline

    i2i = StableDiffusionImg2ImgPipeline(**sd_pipe.components, requires_safety_checker=False)
    i2i.set_progress_bar_config(disable=True)
    image = _init_image()
    expected = ref(i2i, PROMPT, steps=3, guidance_scale=7.5, image=image)  # strength 0.8
    traj = ReverseChain(i2i, PROMPT, steps=3, image=image).run()
    assert traj.info["strength"] == 0.8
    np.testing.assert_array_equal(traj.image, expected)  # identity, not closeness


# ---------------------------------------------------------------------------------------
# 3. Records
# ---------------------------------------------------------------------------------------


def test_one_unet_call_and_one_scheduler_step_per_record(sd_pipe):
    chain = ReverseChain(sd_pipe, PROMPT, steps=3, scheduler="dpm_solver", height=32, width=32)
    calls = {"unet": 0, "step": 0}
    hook = sd_pipe.unet.register_forward_hook(lambda *a: calls.__setitem__("unet", calls["unet"] + 1))
    step = chain.scheduler.step

    def counting_step(*a, **k):
        calls["step"] += 1
        return step(*a, **k)

    chain.scheduler.step = counting_step
    try:
        rec = next(chain)
        assert calls == {"unet": 1, "step": 1}
        chain.run()
    finally:
        hook.remove()
    assert calls == {"unet": 3, "step": 3}
    assert rec.index == 0 and chain.done


def test_record_fields_and_compact_storage(sd_pipe):
    chain = ReverseChain(sd_pipe, PROMPT, steps=3, scheduler="ddim", height=32, width=32)
    first_latents = chain.latents.clone()
    traj = chain.run()
    r0, r1 = traj[0], traj[1]
    for name in (
        "latents",
        "noise_pred_uncond",
        "noise_pred_text",
        "noise_pred",
        "pred_original_sample",
        "prev_sample",
    ):
        x = getattr(r0, name)
        assert x.dtype == torch.float16 and x.device.type == "cpu" and tuple(x.shape) == (4, 16, 16)
    assert r0.prev_sample is r1.latents  # stored once
    torch.testing.assert_close(r0.latents.float(), first_latents[0].half().float())
    # CFG as vector arithmetic: ε̂ = ε̂_u + w (ε̂_c − ε̂_u)
    guided = r0.noise_pred_uncond.float() + 7.5 * r0.guidance_delta
    torch.testing.assert_close(guided, r0.noise_pred.float(), atol=2e-2, rtol=1e-2)
    assert r0.timestep > r1.timestep and r0.sigma > r1.sigma
    assert math.isclose(r0.alpha_bar, 1 / (1 + r0.sigma**2), rel_tol=1e-9)
    assert r0.x_t is r0.latents and r0.x0_hat is r0.pred_original_sample and r0.eps is r0.noise_pred
    with pytest.raises(AttributeError):
        r0.index = 5  # frozen


def test_records_of_a_50_step_512px_run_fit_in_20_mb(sd_pipe):
    # 128 px on the tiny pipeline (VAE factor 2) gives SD's 64×64×4 latents
    chain = ReverseChain(sd_pipe, PROMPT, steps=50, height=128, width=128, scheduler="ddim")
    assert tuple(chain.latents.shape) == (1, 4, 64, 64)
    next(chain), next(chain), next(chain)
    per_step = (chain.trajectory.nbytes() - 64 * 64 * 4 * 2) / 3  # x_t of step 0 is extra
    total = 64 * 64 * 4 * 2 + 50 * per_step
    assert per_step == 5 * 64 * 64 * 4 * 2  # ε̂_u, ε̂_c, ε̂, x̂_0, x_{t−1} in float16
    assert total / 2**20 <= 20


def test_to_frame_is_tidy(sd_pipe):
    traj = ReverseChain(sd_pipe, PROMPT, steps=3, height=32, width=32, scheduler="euler").run()
    df = traj.to_frame()
    assert list(df.columns) == ["step", "timestep", "sigma", "stage", "quantity", "value"]
    assert not df.duplicated(["step", "quantity"]).any()
    q = set(df.quantity)
    assert {
        "x_t",
        "x_t_vp",
        "eps_uncond",
        "eps_text",
        "guidance",
        "eps",
        "x0_hat",
        "x_prev",
        "x0_hat_change",
        "cos_eps_text_uncond",
    } <= q
    assert set(df[df.quantity == "x0_hat_change"].step) == {1, 2}
    # Euler's x_t = x_0 + σ ε is large at the start; on the VP scale it is ≈ unit size
    first = df[df.step == 0].set_index("quantity").value
    assert first["x_t"] > 5 * first["x_t_vp"]
    assert 0.5 < first["x_t_vp"] < 1.5
    steps = traj.steps_frame()
    assert list(steps.step) == [0, 1, 2] and (steps.sigma.diff().dropna() < 0).all()


def test_heun_records_two_calls_per_step(sd_pipe, ref):
    traj = ReverseChain(sd_pipe, PROMPT, steps=3, scheduler="heun", height=32, width=32).run()
    assert len(traj) == 2 * 3 - 1
    assert [r.stage for r in traj] == ["predictor", "corrector", "predictor", "corrector", "predictor"]
    pred, corr = traj[0], traj[1]
    assert corr.latents is pred.prev_sample  # the corrector evaluates the U-Net at the Euler estimate
    assert corr.sigma == traj[2].sigma  # …at σ_{i+1}
    assert corr.timestep == traj[2].timestep
    assert pred.sigma > corr.sigma


def test_x0_formula_equals_scheduler_where_both_exist():
    from diffkit.testing import tiny_random_pipeline

    for pt in ("epsilon", "v_prediction"):
        pipe = tiny_random_pipeline("sd", prediction_type=pt)
        for name in ("ddpm", "ddim", "lms", "euler", "euler_ancestral", "heun"):
            traj = ReverseChain(
                pipe, PROMPT, steps=2, scheduler=name, height=32, width=32, record_dtype=torch.float32
            ).run()
            for r in traj:
                assert r.x0_source == "scheduler"
                kw = {"sigma": r.sigma} if r.sigma_scaled else {"alpha_bar": r.alpha_bar}
                mine = predicted_x0(r.noise_pred, r.latents, prediction_type=pt, **kw)
                torch.testing.assert_close(
                    mine, r.pred_original_sample, atol=1e-4, rtol=1e-4, msg=f"{pt} {name} step {r.index}"
                )


@pytest.mark.parametrize("name", ["pndm", "dpm_solver", "unipc"])
def test_x0_for_schedulers_that_return_none(sd_pipe, name):
    traj = ReverseChain(
        sd_pipe, PROMPT, steps=_steps(name), scheduler=name, height=32, width=32, record_dtype=torch.float32
    ).run()
    assert {r.x0_source for r in traj} == {"formula"}
    if name == "dpm_solver":
        # DPM-Solver++ converts ε̂ to x̂_0 itself inside step(); compare with that
        sched = make_scheduler("dpm_solver", sd_pipe.scheduler.config)
        sched.set_timesteps(3)
        for r in traj:
            sched._step_index = r.index
            theirs = sched.convert_model_output(r.noise_pred[None], sample=r.latents[None])[0]
            torch.testing.assert_close(r.pred_original_sample, theirs, atol=1e-4, rtol=1e-4)
    # the last x̂_0 is close to the final latents (little noise is left)
    last = traj[-1]
    assert (last.pred_original_sample - last.prev_sample).abs().mean() < (
        traj[0].pred_original_sample - traj[0].latents
    ).abs().mean()


def test_predicted_x0_formulas():
    x0, eps = torch.randn(4, 8, 8), torch.randn(4, 8, 8)
    ab = 0.3
    xt = ab**0.5 * x0 + (1 - ab) ** 0.5 * eps
    torch.testing.assert_close(predicted_x0(eps, xt, alpha_bar=ab), x0)
    v = ab**0.5 * eps - (1 - ab) ** 0.5 * x0
    torch.testing.assert_close(predicted_x0(v, xt, prediction_type="v_prediction", alpha_bar=ab), x0)
    sigma = ((1 - ab) / ab) ** 0.5
    torch.testing.assert_close(predicted_x0(eps, x0 + sigma * eps, sigma=sigma), x0)
    with pytest.raises(ValueError, match="exactly one"):
        predicted_x0(eps, xt)


# ---------------------------------------------------------------------------------------
# 4. Stepping
# ---------------------------------------------------------------------------------------


def test_stepping_protocol_and_cancel(sd_pipe):
    chain = ReverseChain(sd_pipe, PROMPT, steps=3, height=32, width=32, scheduler="ddim")
    assert len(chain) == 3 and chain.index == 0 and not chain.done
    assert chain.step().index == 0
    assert next(chain).index == 1
    assert chain.image is None and not chain.trajectory.complete
    seen = []
    chain.cancel()  # a cancel before run() is forgotten: run() starts afresh
    traj = chain.run(callback=seen.append)
    assert [r.index for r in seen] == [2] and traj.complete and chain.done
    assert traj is chain.trajectory and len(chain.records) == 3
    with pytest.raises(StopIteration):
        next(chain)
    with pytest.raises(RuntimeError, match="all 3 steps"):
        chain.step()
    # cancelling from a callback stops after the current step
    chain2 = ReverseChain(sd_pipe, PROMPT, steps=3, height=32, width=32)
    part = chain2.run(callback=lambda r: chain2.cancel())
    assert len(part) == 1 and not part.complete
    assert len(chain2.run()) == 3


def test_pipeline_and_its_scheduler_are_left_alone(sd_pipe, ref):
    sched = sd_pipe.scheduler
    before = ref(sd_pipe, PROMPT, steps=2, guidance_scale=7.5)
    chain = ReverseChain(sd_pipe, PROMPT, steps=2, height=32, width=32, scheduler="euler")
    next(chain)
    between = ref(sd_pipe, PROMPT, steps=2, guidance_scale=7.5)  # pipe() while a chain is half-way
    chain.run()
    assert sd_pipe.scheduler is sched and chain.scheduler is not sched
    np.testing.assert_array_equal(before, between)


# ---------------------------------------------------------------------------------------
# 5. Bad input: each raises ValueError (or warns) naming the fix
# ---------------------------------------------------------------------------------------


def test_unknown_scheduler_lists_valid_names(sd_pipe):
    with pytest.raises(ValueError, match="unknown scheduler 'euler_a'.*ddim.*heun"):
        ReverseChain(sd_pipe, PROMPT, scheduler="euler_a")


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_steps_below_one(sd_pipe, steps):
    with pytest.raises(
        ValueError, match=r"steps=.* is (out of range|not an integer); fix: pass an integer between 1 and 1000"
    ):
        ReverseChain(sd_pipe, PROMPT, steps=steps)


@pytest.mark.parametrize("strength", [0.0, -0.2, 1.5])
def test_strength_outside_zero_one(sd_pipe, strength):
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
        ReverseChain(sd_pipe, PROMPT, image=_init_image(), strength=strength)


def test_strength_problems(sd_pipe):
    with pytest.raises(ValueError, match="img2img only; fix: pass image="):
        ReverseChain(sd_pipe, PROMPT, strength=0.5)
    with pytest.raises(ValueError, match="raise steps to at least 10"):
        ReverseChain(sd_pipe, PROMPT, image=_init_image(), strength=0.1, steps=5)


@pytest.mark.parametrize("w", [-0.1, float("nan")])
def test_negative_guidance(sd_pipe, w):
    with pytest.raises(ValueError, match="guidance_scale must be ≥ 0"):
        ReverseChain(sd_pipe, PROMPT, guidance_scale=w)


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_size_not_a_multiple_of_the_vae_factor(pipes, kind):
    with pytest.raises(ValueError, match="height=33 is not a multiple of the VAE factor 2; fix: use 32 or 34"):
        ReverseChain(pipes[kind], PROMPT, height=33, width=32)
    with pytest.raises(ValueError, match="width=1 is not a multiple"):
        ReverseChain(pipes[kind], PROMPT, height=32, width=1)


def test_too_long_prompt_warns_with_dropped_words(sd_pipe):
    words = " ".join(["cat"] * 75) + " wearing a tiny golden crown"
    with pytest.warns(PromptTruncatedWarning, match="dropped: 'wearing a tiny golden crown'"):
        chain = ReverseChain(sd_pipe, words, steps=1, height=32, width=32)
    assert chain.tokens.truncated and chain.tokens.n_tokens == 77


def test_nan_in_latents_stops_naming_the_step(sd_pipe):
    chain = ReverseChain(sd_pipe, PROMPT, steps=3, height=32, width=32, scheduler="ddim")
    next(chain)
    calls = []

    def poison(module, args, output):
        calls.append(1)
        return (output[0] * float("nan"),)

    hook = sd_pipe.unet.register_forward_hook(poison)
    try:
        with pytest.raises(NonFiniteLatentsError, match=r"NaN or inf at step 1 of 3 .*float32"):
            next(chain)
    finally:
        hook.remove()
    assert isinstance(NonFiniteLatentsError("x"), ValueError)
    assert len(chain.records) == 1


def test_unsupported_pipeline_names_the_supported_ones():
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler())
    with pytest.raises(
        ValueError, match="DDPMPipeline is not supported.*StableDiffusionPipeline.*StableDiffusionXLPipeline"
    ):
        ReverseChain(pipe, PROMPT)
    with pytest.raises(ValueError, match="not supported"):
        ReverseChain(object(), PROMPT)


def test_a_background_run_equals_run_and_pauses_and_resumes(sd_pipe, ref):
    """run_in_background runs the same pipe(...) call in the chain's own worker: cancel pauses it
    after the step in flight, a second run_in_background carries on, and the image is pipe()'s."""
    import threading

    expected = ref(sd_pipe, PROMPT, steps=6, guidance_scale=7.5, scheduler="ddim")
    chain = ReverseChain(sd_pipe, PROMPT, steps=6, height=32, width=32, scheduler="ddim")
    seen, ended = [], []
    gate = threading.Event()

    def on_record(rec):
        seen.append((rec.index, threading.current_thread().name))
        if rec.index == 1:
            chain.cancel()  # from the worker itself: pause before the next call
            gate.set()

    chain.run_in_background(callback=on_record, done=ended.append)
    assert chain.wait(60) and gate.is_set()
    assert not chain.running and ended == [None] and len(chain.trajectory) == 2 and not chain.done
    assert {name for _, name in seen} == {"diffkit-reverse-chain"}  # no thread but the chain's own
    chain.run_in_background(callback=on_record, done=ended.append)
    assert chain.wait(60) and chain.done and ended == [None, None]
    assert [i for i, _ in seen] == list(range(6))
    np.testing.assert_array_equal(chain.image, expected)  # identity, not closeness


def test_a_background_run_refuses_stepping_by_hand_and_reports_its_failure(sd_pipe):
    from diffkit.errors import NonFiniteLatentsError, StateError

    chain = ReverseChain(sd_pipe, PROMPT, steps=40, height=32, width=32)
    chain.run_in_background()
    with pytest.raises(StateError, match="running in the background; fix: wait"):
        chain.step()
    chain.cancel()
    assert chain.wait(60)
    chain.step()  # paused: stepping by hand carries on
    chain.close()
    bad = ReverseChain(sd_pipe, PROMPT, steps=3, height=32, width=32, guidance_scale=1e30)
    errors = []
    bad.run_in_background(done=errors.append)
    with pytest.raises(NonFiniteLatentsError):
        bad.wait(60)
    assert len(errors) == 1 and isinstance(errors[0], NonFiniteLatentsError)
