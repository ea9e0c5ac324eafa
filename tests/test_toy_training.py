"""train_toy_denoiser: a small MLP trained with L_simple comes close to the exact denoiser."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffkit.toy_training import ToyDenoiser, train_toy_denoiser


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    return train_toy_denoiser(steps=1500, seed=0)


def test_the_loss_falls_and_the_network_learns_the_exact_denoiser(trained):
    assert trained.losses[-200:].mean() < 0.6 * trained.losses[:200].mean()
    untrained = ToyDenoiser(
        model=train_toy_denoiser(steps=1, lr=1e-9, seed=0).model,
        data=trained.data,
        schedule=trained.schedule,
        losses=np.zeros(1),
    )
    for t in (200, 500, 800):
        got, before = trained.compare(t, seed=1), untrained.compare(t, seed=1)
        assert got["eps_error"] < 0.2 * got["eps_rms"], got  # close to the ideal ε̂
        assert got["eps_error"] < 0.25 * before["eps_error"], (got, before)  # and learnt, not given


def test_x0_hat_is_the_closed_form_of_the_prediction(trained):
    s = trained.schedule
    x_t = torch.randn(5, 2, generator=torch.Generator().manual_seed(3))
    ab = float(s.alphas_cumprod[300])
    want = (x_t - (1 - ab) ** 0.5 * trained.eps(x_t, 300)) / ab**0.5
    torch.testing.assert_close(trained.x0_hat(x_t, 300), want, rtol=0, atol=0)


def test_training_is_seeded():
    a = train_toy_denoiser(steps=20, seed=4)
    b = train_toy_denoiser(steps=20, seed=4)
    assert np.array_equal(a.losses, b.losses)
    assert not np.array_equal(a.losses, train_toy_denoiser(steps=20, seed=5).losses)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 0}, "steps must be an integer ≥ 1"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"lr": 0}, "lr must be a number"),
        ({"data_pixels": [(300, 1)]}, "pixel values must lie in"),
    ],
)
def test_bad_arguments_name_the_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_toy_denoiser(**kwargs)


def test_run_backwards_the_learnt_chain_lands_on_the_data_like_the_exact_one(trained):
    from diffkit.toy import landing_share, two_pixel_reverse

    pixels = ((trained.data + 1) * 127.5).tolist()
    learnt = trained.sample(n_chains=300, seed=2)
    exact = two_pixel_reverse(pixels, trained.schedule, n_chains=300, seed=2)
    assert learnt.shape == exact.shape == (trained.schedule.num_train_timesteps + 1, 300, 2)
    assert landing_share(exact[-1], pixels) > 0.95
    # near the images (within 20 of 255 levels), if less sharply than the exact denoiser
    assert landing_share(learnt[-1], pixels, radius_px=20) > 0.9
    # the denoiser argument is the only difference: the exact one passed in reproduces the chain
    from diffkit.toy import optimal_denoiser

    same = two_pixel_reverse(
        pixels,
        trained.schedule,
        n_chains=300,
        seed=2,
        denoiser=lambda x, t: optimal_denoiser(x, t, trained.data, trained.schedule),
    )
    np.testing.assert_array_equal(same, exact)
