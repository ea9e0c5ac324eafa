from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from diffkit import (
    TWO_PIXEL_IMAGE,
    get_schedule,
    markov_trajectory,
    optimal_denoiser,
    q_sample,
    q_sample_all,
    q_step,
    sample_image,
    step_density,
    to_model_range,
    to_pil,
    two_pixel_chains,
    two_pixel_reverse,
)


@pytest.fixture
def img():
    return to_model_range(sample_image("chelsea", 32))


# ---- value ranges ------------------------------------------------------------------------


def test_to_model_range_all_input_kinds_agree():
    pil = sample_image("coffee", 16)
    arr = np.array(pil)
    a = to_model_range(pil)
    b = to_model_range(arr)
    c = to_model_range(arr.astype(np.float32) / 255)
    d = to_model_range(torch.from_numpy(arr).permute(2, 0, 1))
    e = to_model_range(arr.astype(np.float64), value_range=(0, 255))
    for x in (b, c, d, e):
        torch.testing.assert_close(a, x, atol=1e-6, rtol=0)
    assert a.shape == (3, 16, 16) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1
    assert to_model_range(arr[None]).shape == (1, 3, 16, 16)
    # round trip through PIL is exact for 8-bit images
    assert np.array_equal(np.asarray(to_pil(a)), arr)


@pytest.mark.parametrize(
    "bad, match",
    [
        (Image.new("L", (8, 8)), r"mode 'L'.*convert\('RGB'\)"),
        (Image.new("RGBA", (8, 8)), r"mode 'RGBA'.*convert\('RGB'\)"),
        (np.zeros((8, 8)), r"\(H, W, 3\)"),
        (np.zeros((8, 8, 4)), r"image\[\.\.\., :3\]"),
        (torch.zeros(8, 8, 3), r"channels come first"),
        (np.full((4, 4, 3), np.nan), "NaN"),
        (np.full((4, 4, 3), -0.5), r"outside the assumed range \[0, 1\]"),
        (np.full((4, 4, 3), 200.0), "value_range=\\(low, high\\)"),
        ("a picture", "expected a PIL image"),
        (torch.zeros(3, 4, 4, dtype=torch.bool), "unsupported image dtype"),
    ],
)
def test_bad_images_name_the_fix(bad, match):
    with pytest.raises(ValueError, match=match):
        to_model_range(bad)


# ---- closed form and Markov step --------------------------------------------------------


def test_q_sample_matches_diffusers_add_noise(img):
    sched = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    s = get_schedule("scaled_linear")
    x0 = img[None].expand(4, -1, -1, -1)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 10, 500, 999])
    ours = q_sample(x0, t, s, noise=noise)
    ref = sched.add_noise(x0, noise, t)
    torch.testing.assert_close(ours, ref, atol=2e-6, rtol=0)


def test_q_sample_formula_and_seed(img):
    s = get_schedule("linear")
    eps = torch.randn(img.shape, generator=torch.Generator().manual_seed(3))
    x = q_sample(img, 250, s, noise=eps)
    ab = s.alphas_cumprod[250]
    torch.testing.assert_close(x, ab**0.5 * img + (1 - ab) ** 0.5 * eps)
    torch.testing.assert_close(q_sample(img, 250, s, seed=3), x)
    assert not torch.equal(q_sample(img, 250, s, seed=4), x)


def test_q_sample_defaults_to_seed_0_like_its_siblings(img):
    import inspect

    from diffkit.forward import markov_trajectory

    s = get_schedule("linear")
    assert inspect.signature(q_sample).parameters["seed"].default == 0
    assert inspect.signature(markov_trajectory).parameters["seed"].default == 0
    torch.manual_seed(123)
    a = q_sample(img, 250, s)
    torch.manual_seed(456)  # the global generator plays no part unless seed=None
    assert torch.equal(q_sample(img, 250, s), a) and torch.equal(q_sample(img, 250, s, seed=0), a)
    torch.manual_seed(7)
    g = q_sample(img, 250, s, seed=None)
    torch.manual_seed(7)
    assert torch.equal(q_sample(img, 250, s, seed=None), g) and not torch.equal(g, a)


def test_q_step_is_one_gaussian_step(img):
    s = get_schedule("linear")
    eps = torch.randn(img.shape, generator=torch.Generator().manual_seed(0))
    x = q_step(img, 7, s, noise=eps)
    torch.testing.assert_close(x, (1 - s.betas[7]) ** 0.5 * img + s.betas[7] ** 0.5 * eps)
    mean, sd = step_density([0.3, 0.2], 7, s)
    np.testing.assert_allclose(mean, np.sqrt(1 - s.betas[7]) * np.array([0.3, 0.2]))
    assert sd == pytest.approx(np.sqrt(s.betas[7]))


def test_q_sample_all_equals_q_sample_per_timestep(img):
    s = get_schedule("cosine")
    eps = torch.randn(img.shape, generator=torch.Generator().manual_seed(5))
    ts = [0, 1, 99, 500, 999]
    frames = q_sample_all(img, s, timesteps=ts, noise=eps)
    assert frames.shape == (5, *img.shape)
    for f, t in zip(frames, ts):
        torch.testing.assert_close(f, q_sample(img, t, s, noise=eps), atol=1e-6, rtol=0)
    # reusing a buffer and half precision
    buf = torch.empty_like(frames)
    assert q_sample_all(img, s, timesteps=ts, noise=eps, out=buf) is buf
    torch.testing.assert_close(buf, frames)
    half = q_sample_all(img, s, timesteps=ts, noise=eps, dtype=torch.float16)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), frames, atol=4e-3, rtol=0)
    assert q_sample_all(img, s).shape == (1000, *img.shape)


def test_memory_budget_names_the_fix():
    big = torch.zeros(3, 512, 512)
    with pytest.raises(ValueError, match=r"fewer timesteps.*float16"):
        q_sample_all(big, "linear", max_bytes=2**28)
    with pytest.raises(ValueError, match="max_bytes"):
        markov_trajectory(big, "linear", max_bytes=2**28)


def test_markov_trajectory_is_seeded_and_keeps_requested_steps(img):
    a = markov_trajectory(img, "linear", seed=1, timesteps=[0, 10, 999])
    b = markov_trajectory(img, "linear", seed=1)
    assert a.shape == (3, *img.shape)
    torch.testing.assert_close(a, b[[0, 10, 999]])
    assert not torch.equal(markov_trajectory(img, "linear", seed=2, timesteps=[10]), a[1:2])


@pytest.mark.parametrize("t", [9, 99, 499, 999])
def test_iterated_markov_steps_agree_with_the_closed_form(t):
    """Ho et al. 2020 eq. 4: t + 1 Markov steps are distributed as q(x_t | x_0)."""
    s = get_schedule("linear")
    n = 20000
    x0 = torch.tensor([170 / 127.5 - 1, 150 / 127.5 - 1]).repeat(n, 1)
    chain = markov_trajectory(x0, s, seed=0, timesteps=[t])[0].double()
    closed = q_sample(x0, t, s, seed=1).double()
    mean = s.sqrt_alphas_cumprod[t] * x0[0].double()
    var = 1 - s.alphas_cumprod[t]
    for sample in (chain, closed):
        # mean: z-test per coordinate; variance: chi-square interval (both at 1e-4 two-sided)
        z = (sample.mean(0) - mean) / np.sqrt(var / n)
        assert torch.all(z.abs() < 3.9), z
        lo, hi = stats.chi2.ppf([5e-5, 1 - 5e-5], n - 1) / (n - 1)
        ratio = sample.var(0) / var
        assert torch.all((ratio > lo) & (ratio < hi)), ratio
    # and the two samples against each other (two-sample KS per coordinate)
    for d in range(2):
        assert stats.ks_2samp(chain[:, d].numpy(), closed[:, d].numpy()).pvalue > 1e-4


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x: q_sample(x, 1000, "linear"), r"\[0, 1000\)"),
        (lambda x: q_sample(x, -1, "linear"), r"\[0, 1000\)"),
        (lambda x: q_sample(x, [1, 2], "linear"), "one entry per item"),
        (lambda x: q_sample(x * float("nan"), 1, "linear"), "NaN"),
        (lambda x: q_sample(x, 1, "linear", noise=torch.zeros(3)), "noise must have the shape"),
        (lambda x: q_sample(x, 1, "quadratic"), "unknown schedule"),
        (lambda x: q_step(x, [1, 2], "linear"), "one timestep"),
        (lambda x: q_sample_all(x, "linear", timesteps=[[1]]), "1-D"),
    ],
)
def test_bad_forward_input(img, call, match):
    with pytest.raises(ValueError, match=match):
        call(img)


# ---- the two-pixel toy ------------------------------------------------------------------


def test_two_pixel_chains_start_at_the_image_and_end_at_standard_normal():
    ch = two_pixel_chains(TWO_PIXEL_IMAGE, n_chains=4000, seed=0)
    assert ch.points.shape == (1001, 4000, 2)
    np.testing.assert_allclose(ch.to_pixels(ch.points[0, 0]), [170, 150])
    end = ch.at(999)
    assert np.all(np.abs(end.mean(0)) < 4 / np.sqrt(4000))
    np.testing.assert_allclose(np.cov(end.T), np.eye(2), atol=0.1)
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        two_pixel_chains((300, 150))
    with pytest.raises(ValueError, match="n_chains must be ≥ 1"):
        two_pixel_chains(n_chains=0)


def test_optimal_denoiser_is_the_posterior_mean():
    data = torch.tensor([[0.5, 0.2], [-0.4, -0.6]], dtype=torch.float64)
    s = get_schedule("linear")
    # near the start of the chain the posterior is sure which point it was
    xt = q_sample(data, 5, s, seed=0)
    torch.testing.assert_close(optimal_denoiser(xt, 5, data, s), data, atol=1e-6, rtol=0)
    # at the end it knows nothing: the data mean
    torch.testing.assert_close(
        optimal_denoiser(torch.zeros(1, 2, dtype=torch.float64), 999, data, s)[0], data.mean(0), atol=1e-3, rtol=0
    )
    # brute-force check of the softmax weights at a middle step
    x = torch.tensor([[0.1, -0.1]], dtype=torch.float64)
    ab = s.alphas_cumprod[300]
    logw = -((x - ab**0.5 * data) ** 2).sum(1) / (2 * (1 - ab))
    w = torch.softmax(logw, 0)
    torch.testing.assert_close(optimal_denoiser(x, 300, data, s)[0], (w[:, None] * data).sum(0))


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_two_pixel_reverse_flows_back_to_the_data(eta):
    data = [(170, 150), (40, 220), (90, 30)]
    s = get_schedule("linear", 200)
    out = two_pixel_reverse(data, s, n_chains=300, seed=0, eta=eta)
    assert out.shape == (201, 300, 2)
    d = torch.as_tensor(np.asarray(data, float) / 127.5 - 1)
    end = torch.as_tensor(out[-1])
    nearest = torch.cdist(end, d).min(1).values
    assert nearest.max() < 0.02  # every chain ends on a training image
    counts = torch.cdist(end, d).argmin(1).bincount(minlength=3)
    assert counts.min() > 50  # and all three images are reached


# ---- latents ----------------------------------------------------------------------------


def test_forward_latents_uses_the_pipeline_scheduler(tiny_sd):
    from diffkit import forward_latents

    img = sample_image("astronaut", 32)
    out = forward_latents(tiny_sd, img, [0, 500, 999], seed=0)
    lat0, noisy = out["latents0"], out["noisy"]
    assert noisy.shape == (3, *lat0.shape)
    noise = torch.randn(lat0[None].shape, generator=torch.Generator().manual_seed(0))
    ref = tiny_sd.scheduler.add_noise(
        lat0[None].expand(3, -1, -1, -1), noise.expand(3, -1, -1, -1), torch.tensor([0, 500, 999])
    )
    torch.testing.assert_close(noisy, ref, atol=1e-5, rtol=0)
    assert out["images"].shape == (3, 3, 32, 32)
    with pytest.raises(ValueError, match="multiple of the VAE factor"):
        forward_latents(tiny_sd, sample_image("astronaut", 33), [0])


def test_paint_drop_spreads_as_the_square_root_of_time():
    from diffkit import paint_drop

    pos = paint_drop(4000, 400, step_size=1.0, seed=0)
    assert pos.shape == (401, 4000, 2)
    assert np.all(pos[0] == 0)
    for k in (4, 100, 400):
        assert pos[k].std(axis=0) == pytest.approx([np.sqrt(k)] * 2, rel=0.05)
    with pytest.raises(ValueError, match="≥ 1"):
        paint_drop(0, 10)


def test_landing_share_and_why_many_small_steps():
    from diffkit import landing_share

    data = [(170, 150), (60, 200), (210, 40)]
    assert landing_share(np.asarray(data) / 127.5 - 1, data) == 1.0
    assert landing_share(np.zeros((3, 2)), data) == 0.0
    # with only 5 big steps, even the exact denoiser leaves most chains between the images
    few = two_pixel_reverse(data, get_schedule("cosine", 5), n_chains=300, seed=0)[-1]
    many = two_pixel_reverse(data, get_schedule("cosine", 100), n_chains=300, seed=0)[-1]
    assert landing_share(few, data) < 0.6 < 0.99 < landing_share(many, data)


def test_q_sample_and_q_step_are_seeded_by_default_like_their_siblings():
    x = torch.zeros(3, 4, 4)
    torch.manual_seed(123)
    a, sa = q_sample(x, 500, "linear"), q_step(x, 500, "linear")
    torch.manual_seed(999)  # the global generator does not matter
    assert torch.equal(a, q_sample(x, 500, "linear")) and torch.equal(sa, q_step(x, 500, "linear"))
    assert torch.equal(a, q_sample(x, 500, "linear", seed=0))
    assert not torch.equal(q_sample(x, 500, "linear", seed=None), q_sample(x, 500, "linear", seed=None))
