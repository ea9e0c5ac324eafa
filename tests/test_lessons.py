"""The lessons of issue 25: the hand-written sampler (notebook 02) and the theory bridge (notebook 03).

The sampler: the notebook's own solution cell, run here, equals ``pipe(...)`` with DDIM bit for bit,
and the check names the mistake of a wrong loop. The theory bridge: the toy's closed form,
posterior and score against the formulas and against diffusers, in float64 (tolerances stated).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import diffkit as dk

ROOT = Path(__file__).resolve().parents[1]
NB02 = ROOT / "notebooks" / "02_the_reverse_chain.ipynb"
PROMPT = "a red circle"


def _cells(path: Path, tag: str | None = None, contains: str = "") -> list[str]:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    src = lambda c: c.source if isinstance(c.source, str) else "".join(c.source)  # noqa: E731
    return [src(c) for c in nb.cells if (tag is None or tag in c.metadata.get("tags", [])) and contains in src(c)]


@pytest.fixture(scope="module")
def pipe():
    return dk.load_pipeline("tiny")


@pytest.fixture(scope="module")
def solution():
    """``my_sampler`` as notebook 02's solution cell defines it (the cell's source, executed)."""
    (source,) = _cells(NB02, "solution", "def my_sampler")
    namespace = {"dk": dk, "torch": torch, "np": np}
    exec(compile(source, "notebook 02 solution", "exec"), namespace)
    return namespace["my_sampler"]


def _reference(pipe, steps=20, guidance_scale=7.5, seed=0):
    """``pipe(...)`` with DDIM, built here as a user would: its own image, nothing of diffkit's loop."""
    import diffusers

    ddim = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
    work = diffusers.StableDiffusionPipeline(**{**pipe.components, "scheduler": ddim})
    work.set_progress_bar_config(disable=True)
    out = work(
        PROMPT,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    )
    return out.images[0]


def test_the_notebooks_solution_equals_the_pipeline_bit_for_bit(pipe, solution):
    mine = solution(pipe, PROMPT, steps=20, guidance_scale=7.5, seed=0)
    ref = _reference(pipe)
    assert mine.dtype == ref.dtype and mine.shape == ref.shape
    assert np.array_equal(mine, ref), f"largest difference {np.abs(mine - ref).max():.3g}"
    verdict = dk.check_sampler(mine, pipe, PROMPT, steps=20, guidance_scale=7.5, seed=0)
    assert verdict.equal and verdict.max_abs_diff == 0.0 and "equal = True" in str(verdict)


def test_the_scaffold_has_the_solutions_lines_left_to_fill():
    (scaffold,) = [s for s in _cells(NB02, None, "def my_sampler") if "..." in s]
    (solution,) = _cells(NB02, "solution", "def my_sampler")
    assert "solution" not in scaffold
    blanks = [line for line in scaffold.splitlines() if "= ..." in line or "(...)" in line]
    assert 4 <= len(blanks) <= 8, blanks
    assert "..." not in solution


def test_the_library_loop_equals_the_pipeline_on_another_seed_and_scale(pipe):
    latents, image = dk.lessons.ddim_by_hand(pipe, PROMPT, steps=7, guidance_scale=3.0, seed=5)
    ref = _reference(pipe, steps=7, guidance_scale=3.0, seed=5)
    assert np.array_equal(image, ref)
    verdict = dk.check_sampler(latents, pipe, PROMPT, steps=7, guidance_scale=3.0, seed=5)
    assert verdict.equal and verdict.kind == "latents"


@pytest.mark.parametrize(
    "mistake",
    [
        "guidance u + w·c",
        # the others run the 14 mistakes' loops each (3–5 s): in the slow tier, outside the 5-minute loop
        pytest.param("ᾱ_prev at the last step", marks=pytest.mark.slow),
        pytest.param("timesteps without steps_offset", marks=pytest.mark.slow),
        pytest.param("decoded without ÷ scaling_factor", marks=pytest.mark.slow),
    ],
)
def test_a_wrong_loop_is_told_apart_with_the_right_hint(pipe, mistake):
    _, image = dk.lessons.ddim_by_hand(pipe, PROMPT, steps=8, seed=1, mistake=mistake)
    verdict = dk.check_sampler(image, pipe, PROMPT, steps=8, seed=1)
    assert not verdict.equal and verdict.max_abs_diff > 0
    assert verdict.cause == mistake and verdict.certain
    assert dk.lessons.SAMPLER_MISTAKES[mistake][1] in str(verdict)


def test_the_guidance_mistake_written_by_hand_is_named(pipe, solution):
    """A student's loop (the notebook's solution with ε̂_u + w·ε̂_c): not equal, and the hint names the formula."""
    (source,) = _cells(NB02, "solution", "def my_sampler")
    wrong = source.replace("e_u + guidance_scale * (e_c - e_u)", "e_u + guidance_scale * e_c")
    assert wrong != source, "the solution's guidance line changed; update this test"
    namespace = {"dk": dk, "torch": torch, "np": np}
    exec(wrong, namespace)
    image = namespace["my_sampler"](pipe, PROMPT, steps=8, guidance_scale=7.5, seed=1)
    verdict = dk.check_sampler(image, pipe, PROMPT, steps=8, seed=1)
    assert not verdict.equal
    assert verdict.cause == "guidance u + w·c" and "ε̂_u + w·(ε̂_c − ε̂_u)" in verdict.hint


def test_check_sampler_reads_the_range_and_the_shape(pipe):
    _, image = dk.lessons.ddim_by_hand(pipe, PROMPT, steps=3)
    assert dk.check_sampler(image * 2 - 1, pipe, PROMPT, steps=3).cause == "range"
    assert dk.check_sampler(image[:8], pipe, PROMPT, steps=3).cause == "shape"
    with pytest.raises(dk.errors.InputError):
        dk.check_sampler(np.zeros((5, 5)), pipe, PROMPT, steps=3)


# ---------------------------------------------------------------------------------------------
# The theory bridge, float64
# ---------------------------------------------------------------------------------------------

SCHEDULES = ["linear", "scaled_linear", "cosine"]


@pytest.mark.parametrize("name", SCHEDULES)
def test_iterating_the_chain_gives_the_closed_form(name):
    s = dk.get_schedule(name)
    scale, var = dk.lessons.chain_moments(s)
    np.testing.assert_allclose(scale, s.sqrt_alphas_cumprod, rtol=1e-12, atol=0)
    np.testing.assert_allclose(var, 1 - s.alphas_cumprod, rtol=1e-12, atol=1e-15)


def test_the_markov_chain_samples_have_the_closed_forms_moments():
    """Monte Carlo: 40,000 chains; the mean and variance within 5 standard errors of √ᾱ·x_0 and 1 − ᾱ."""
    s = dk.get_schedule("linear")
    x0 = dk.toy.pixels_to_model(dk.TWO_PIXEL_IMAGE)
    n = 40_000
    xs = dk.markov_trajectory(x0.expand(n, 2).contiguous(), s, seed=0, timesteps=[9, 299, 999])
    for t, x in zip([9, 299, 999], xs):
        ab = s.alphas_cumprod[t]
        se_mean = math.sqrt((1 - ab) / n)
        assert np.all(np.abs(x.mean(0).numpy() - math.sqrt(ab) * x0.numpy()) < 5 * se_mean)
        se_var = (1 - ab) * math.sqrt(2 / (n - 1))
        assert np.all(np.abs(x.var(0).numpy() - (1 - ab)) < 5 * se_var)


def _ddpm64(schedule):
    """diffusers' DDPMScheduler with the toy's float64 schedule swapped in (it computes in the tensors' dtype)."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=schedule.num_train_timesteps, beta_schedule="linear")
    sched.betas = torch.from_numpy(np.array(schedule.betas))
    sched.alphas = torch.from_numpy(np.array(schedule.alphas))
    sched.alphas_cumprod = torch.from_numpy(np.array(schedule.alphas_cumprod))
    sched.one = torch.tensor(1.0, dtype=torch.float64)
    return sched


@pytest.mark.parametrize("t", [0, 1, 10, 300, 999])
def test_the_posterior_is_diffusers_ddpm_step(t):
    """μ̃ and β̃ against DDPMScheduler: float64 to 1e-12 (relative); its float32 tensors to 1e-6."""
    from diffusers import DDPMScheduler

    s = dk.get_schedule("linear")
    gen = torch.Generator().manual_seed(t)
    x0 = torch.rand((64, 2), generator=gen, dtype=torch.float64) * 2 - 1
    x_t = math.sqrt(s.alphas_cumprod[t]) * x0 + math.sqrt(1 - s.alphas_cumprod[t]) * torch.randn(
        (64, 2), generator=gen, dtype=torch.float64
    )
    mean, var = dk.toy_posterior(x_t, x0, t, s)
    sched = _ddpm64(s)
    sched.config.prediction_type = "sample"  # the model "outputs" the exact x_0: step's mean is μ̃
    sched.register_to_config(prediction_type="sample")
    out = sched.step(x0, t, x_t, generator=torch.Generator().manual_seed(99)).prev_sample
    z = torch.randn((64, 2), generator=torch.Generator().manual_seed(99), dtype=torch.float64) if t > 0 else 0.0
    mean_diffusers = out - sched._get_variance(t) ** 0.5 * z if t > 0 else out
    torch.testing.assert_close(mean, mean_diffusers, rtol=1e-12, atol=1e-12)
    if t > 0:
        assert var == pytest.approx(float(sched._get_variance(t)), rel=1e-12)
    else:
        assert var == 0.0 and float(sched._get_variance(t)) == 1e-20  # diffusers clamps β̃ at 1e-20
    # diffusers as it ships (float32 schedule): the same to float32's precision, of which 1 − ᾱ_{t−1}
    # loses digits near ᾱ = 1 (about eps32 / (1 − ᾱ_{t−1}), 1e-3 at t = 1) and the float32 cumulative
    # product of the α_s more with t (1e-5 at t = 300): 1e-4, or ten times the first, allowed
    f32 = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    if t > 0:
        rel = max(1e-4, 10 * float(np.finfo(np.float32).eps) / (1 - s.alphas_cumprod[t - 1]))
        assert var == pytest.approx(float(f32._get_variance(t)), rel=rel)


@pytest.mark.parametrize("t", [1, 50, 700])
def test_the_posterior_is_what_bayes_gives(t):
    """The product of q(x_t | x_{t−1}) and q(x_{t−1} | x_0), normalised on a grid in x_{t−1} (1-D), to 1e-10."""
    s = dk.get_schedule("linear")
    x0, x_t = 0.3, -0.2
    c0, ct, var = dk.lessons.posterior_coefficients(t, s)
    ab_prev = s.alphas_cumprod[t - 1]
    sd = math.sqrt(var)
    mu = c0 * x0 + ct * x_t
    grid = np.linspace(mu - 12 * sd, mu + 12 * sd, 200_001)
    logp = -((x_t - math.sqrt(s.alphas[t]) * grid) ** 2) / (2 * s.betas[t]) - (grid - math.sqrt(ab_prev) * x0) ** 2 / (
        2 * (1 - ab_prev)
    )
    p = np.exp(logp - logp.max())
    p /= p.sum()
    m = (p * grid).sum()
    assert abs(m - mu) < 1e-10 * max(1.0, abs(mu))
    assert abs((p * (grid - m) ** 2).sum() - var) < 1e-8 * var


def test_posterior_at_the_first_step_is_the_clean_image():
    assert dk.lessons.posterior_coefficients(0, "linear") == (1.0, 0.0, 0.0)


@pytest.mark.parametrize("t", [0, 10, 100, 500, 999])
def test_the_ideal_eps_is_the_scaled_score(t):
    """ε̂*(x_t) = −√(1−ᾱ_t)·∇ log p_t(x_t): optimal_denoiser, the closed-form score and autograd, to 1e-10."""
    from diffkit.toy_training import TOY_DATA

    s = dk.get_schedule("linear")
    data = dk.toy.pixels_to_model(TOY_DATA).reshape(-1, 2)
    ab = s.alphas_cumprod[t]
    gen = torch.Generator().manual_seed(t)
    x0 = data[torch.randint(0, 3, (200,), generator=gen)]
    x = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * torch.randn((200, 2), generator=gen, dtype=torch.float64)
    x = torch.cat([x, torch.randn((50, 2), generator=gen, dtype=torch.float64) * 2])  # and off the data
    eps_star = (x - math.sqrt(ab) * dk.optimal_denoiser(x, t, data, s)) / math.sqrt(1 - ab)
    score = dk.toy_score(x, t, data, s)
    torch.testing.assert_close(-math.sqrt(1 - ab) * score, eps_star, rtol=0, atol=1e-10)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(dk.toy_log_density(xg, t, data, s).sum(), xg)
    torch.testing.assert_close(grad, score, rtol=1e-10, atol=1e-10 / math.sqrt(1 - ab))


def test_the_log_density_is_a_normalised_mixture():
    """∫ p_t = 1 on a fine 2-D grid (to 1e-6), and the mixture of one point is the Gaussian."""
    s = dk.get_schedule("linear")
    data = torch.tensor([[0.3, -0.5], [-0.6, 0.4]], dtype=torch.float64)
    u = torch.linspace(-7, 7, 701, dtype=torch.float64)
    g = torch.stack(torch.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    p = dk.toy_log_density(g, 500, data, s).exp()
    assert abs(float(p.sum()) * float(u[1] - u[0]) ** 2 - 1) < 1e-6
    one = dk.toy_log_density(g[:5], 500, data[:1], s)
    ab = s.alphas_cumprod[500]
    gauss = -((g[:5] - math.sqrt(ab) * data[:1]) ** 2).sum(-1) / (2 * (1 - ab)) - math.log(2 * math.pi * (1 - ab))
    torch.testing.assert_close(one, gauss, rtol=0, atol=1e-12)
