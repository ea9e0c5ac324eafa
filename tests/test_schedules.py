from __future__ import annotations

import inspect
import re

import diffusers
import numpy as np
import pandas as pd
import pytest
import torch

from diffkit import SCHEDULERS, get_schedule
from diffkit.schedules import (
    SCHEDULE_NAMES,
    NoiseSchedule,
    cosine_betas,
    from_diffusers,
    karras_schedule,
    karras_sigmas,
    schedules_frame,
)

DIFFUSERS_TO_OURS = {
    "linear": "linear",
    "scaled_linear": "scaled_linear",
    "squaredcos_cap_v2": "cosine",
    "sigmoid": "sigmoid",
    "laplace": "laplace",
}


def diffusers_beta_schedules() -> set[str]:
    src = inspect.getsource(diffusers.DDPMScheduler.__init__)
    return set(re.findall(r'beta_schedule == "(\w+)"', src))


def test_we_cover_every_beta_schedule_diffusers_offers():
    assert diffusers_beta_schedules() <= set(DIFFUSERS_TO_OURS)


@pytest.mark.parametrize("beta_schedule", sorted(DIFFUSERS_TO_OURS))
@pytest.mark.parametrize("betas", [(1e-4, 0.02), (0.00085, 0.012)])
def test_alphas_cumprod_match_diffusers(beta_schedule, betas):
    start, end = betas
    ref = diffusers.DDPMScheduler(beta_schedule=beta_schedule, beta_start=start, beta_end=end)
    name = DIFFUSERS_TO_OURS[beta_schedule]
    kw = {"beta_start": start, "beta_end": end} if name in ("linear", "scaled_linear", "sigmoid") else {}
    ours = get_schedule(name, **kw)
    np.testing.assert_allclose(ours.alphas_cumprod, ref.alphas_cumprod.double().numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.betas, ref.betas.double().numpy(), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("short", sorted(SCHEDULERS))
def test_from_diffusers_every_scheduler_class(short):
    cls = getattr(diffusers, SCHEDULERS[short])
    sched = cls(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    s = from_diffusers(sched)
    np.testing.assert_allclose(s.alphas_cumprod, sched.alphas_cumprod.double().numpy(), atol=1e-12)
    np.testing.assert_allclose(s.alphas_cumprod, get_schedule("scaled_linear").alphas_cumprod, atol=1e-6)
    # and from its config alone
    s2 = from_diffusers(dict(sched.config))
    np.testing.assert_allclose(s2.alphas_cumprod, s.alphas_cumprod, atol=1e-12)


def test_from_diffusers_honours_zero_snr_and_trained_betas():
    sched = diffusers.DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, rescale_betas_zero_snr=True
    )
    s = from_diffusers(sched)
    assert s.alphas_cumprod[-1] < 1e-6
    betas = np.linspace(1e-3, 0.05, 50)
    s = from_diffusers(diffusers.DDPMScheduler(num_train_timesteps=50, trained_betas=betas))
    np.testing.assert_allclose(s.betas, betas, rtol=1e-4)  # diffusers keeps ᾱ in float32


def test_flow_matching_scheduler_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="no alphas_cumprod"):
        from_diffusers(diffusers.FlowMatchEulerDiscreteScheduler())


def test_derived_arrays_follow_their_formulas():
    s = get_schedule("linear")
    b = np.linspace(1e-4, 0.02, 1000)
    ab = np.cumprod(1 - b)
    np.testing.assert_allclose(s.betas, b)
    np.testing.assert_allclose(s.alphas, 1 - b)
    np.testing.assert_allclose(s.alphas_cumprod, ab)
    np.testing.assert_allclose(s.sqrt_alphas_cumprod, np.sqrt(ab))
    np.testing.assert_allclose(s.sqrt_one_minus_alphas_cumprod, np.sqrt(1 - ab))
    np.testing.assert_allclose(s.snr, ab / (1 - ab))
    np.testing.assert_allclose(s.log_snr, np.log(ab / (1 - ab)))
    np.testing.assert_allclose(s.sigmas, np.sqrt((1 - ab) / ab))
    assert s.num_train_timesteps == 1000
    # Ho et al. 2020: the linear schedule leaves almost no signal: ᾱ_T ≈ 4e-5
    assert 3e-5 < s.alphas_cumprod[-1] < 5e-5
    with pytest.raises(ValueError):
        s.betas[0] = 1.0  # read-only


def test_sigmas_match_diffusers_euler():
    sched = diffusers.EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    s = get_schedule("scaled_linear")
    full = ((1 - sched.alphas_cumprod) / sched.alphas_cumprod) ** 0.5
    np.testing.assert_allclose(s.sigmas, full.double().numpy(), rtol=1e-4)  # float32 reference


def test_cosine_matches_nichol_dhariwal_closed_form():
    T, s = 1000, 0.008
    f = lambda t: np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    t = np.arange(1, T)
    sched = get_schedule("cosine")
    # ᾱ_t = f(t)/f(0) wherever β was not clipped
    np.testing.assert_allclose(sched.alphas_cumprod[: T - 50], (f(t) / f(0))[: T - 50], rtol=1e-9)
    assert cosine_betas().max() == pytest.approx(0.999)


def test_karras_sigmas_match_diffusers():
    smin, smax = 0.0292, 14.6146
    ref = diffusers.EulerDiscreteScheduler()._convert_to_karras(torch.tensor([smax, smin]), 25)
    np.testing.assert_allclose(karras_sigmas(25, smin, smax), np.asarray(ref, dtype=np.float64), rtol=1e-6)
    k = karras_schedule()
    sd = get_schedule("scaled_linear")
    assert k.sigmas[0] == pytest.approx(sd.sigmas[0])
    assert k.sigmas[-1] == pytest.approx(sd.sigmas[-1])
    assert np.all(np.diff(k.sigmas) > 0)
    np.testing.assert_allclose(k.alphas_cumprod, 1 / (1 + k.sigmas**2))


def test_from_betas_and_from_alphas_cumprod_round_trip():
    s = get_schedule("sigmoid")
    back = NoiseSchedule.from_alphas_cumprod(s.alphas_cumprod, name="x")
    np.testing.assert_allclose(back.betas, s.betas, rtol=1e-9, atol=1e-12)


def test_tidy_frame_one_row_per_schedule_and_t():
    df = schedules_frame(["linear", "cosine"], num_train_timesteps=100)
    assert isinstance(df, pd.DataFrame)
    assert len(df) == 200
    assert set(df["schedule"]) == {"linear", "cosine"}
    assert {"t", "beta", "alpha_bar", "snr", "log_snr", "sigma"} <= set(df.columns)
    row = df[(df.schedule == "linear") & (df.t == 10)].iloc[0]
    assert row.alpha_bar == pytest.approx(get_schedule("linear", 100).alphas_cumprod[10])


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_every_named_schedule_is_a_valid_gaussian_schedule(name):
    s = get_schedule(name)
    assert np.all((s.betas > 0) & (s.betas <= 1))
    assert np.all(np.diff(s.alphas_cumprod) <= 0)
    # diffusers' Laplace schedule stops at ᾱ_T = √(SNR/(1+SNR)) ≈ 0.03, short of pure noise
    end = 0.05 if name == "laplace" else 0.01
    assert s.alphas_cumprod[-1] < end and s.alphas_cumprod[0] > 0.97


def test_unknown_schedule_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown schedule 'quadratic'.*linear.*cosine"):
        get_schedule("quadratic")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_train_timesteps": 1}, "num_train_timesteps must be ≥ 2"),
        ({"num_train_timesteps": 10.5}, "whole number"),
        ({"beta_start": 0.02, "beta_end": 1e-4}, "swap them"),
        ({"beta_start": float("nan")}, "beta_start must be a number"),
        ({"beta_end": 1.5}, "beta_end must be a number"),
    ],
)
def test_bad_schedule_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_schedule("linear", **kwargs)


def test_bad_betas():
    with pytest.raises(ValueError, match="finite"):
        NoiseSchedule.from_betas([0.1, float("nan")])
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        NoiseSchedule.from_betas([0.1, -0.1])


@pytest.mark.parametrize("t", [-1, 1000, 3.5, float("nan"), "5"])
def test_timestep_out_of_range_names_the_range(t):
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        get_schedule("linear").check_timestep(t)
