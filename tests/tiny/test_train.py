"""The recipe's loss weights, learning rates, EMA and seeds; figure masks."""

from __future__ import annotations

import dataclasses

import pytest

from diffkit.tiny import losses as L
from diffkit.tiny import recipe as R


def test_loss_weights_on_x0_follow_their_formulas():
    """The weight on ‖ε̂ − ε‖² times SNR is the weight on ‖x̂₀ − x₀‖² (inside the cap and floor)."""
    import torch

    snr = torch.tensor([0.3, 1.0, 4.0, 10.0, 1e4])
    cfg = dataclasses.replace(R.TINY2.unet, eps_weight_cap=1e9, eps_weight_floor=0.0)
    g = cfg.min_snr_gamma
    r = dataclasses.replace(cfg, loss_weighting="min-snr")
    torch.testing.assert_close(L.loss_weights(snr, r) * snr, snr.clamp(max=g))
    r = dataclasses.replace(cfg, loss_weighting="min-snr+1")
    torch.testing.assert_close(L.loss_weights(snr, r) * snr, (snr + 1).clamp(max=g))
    # the point of "+1": high-noise steps keep a weight of about 1 on x̂₀, not about 0
    assert L.loss_weights(torch.tensor([1e-6]), r) * 1e-6 > 0.99
    with pytest.raises(ValueError, match="loss_weighting must be"):
        L.loss_weights(snr, dataclasses.replace(cfg, loss_weighting="uniform"))


def test_get_lr_is_the_three_schedules_the_recipe_trained_with():
    """get_lr reproduces, bit for bit, the VAE's cosine, the U-Net's warm-up and the judge's
    warm-up-then-cosine as they were written inline before issue 24."""
    import math

    t = R.TINY2
    for step in (0, 1, 49, 199, 200, 599, 1199, 2399):
        assert R.get_lr(step, t.vae) == t.vae.lr * 0.5 * (1 + math.cos(math.pi * step / t.vae.steps))
        assert R.get_lr(step, t.unet) == t.unet.lr * min(1.0, (step + 1) / t.unet.warmup)
        assert R.get_lr(step, t.polish) == t.polish.lr * min(1.0, (step + 1) / t.polish.warmup)
        want = t.clip.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / t.clip.steps))
        assert R.get_lr(step, t.clip) == want


def test_ema_is_the_lerp_with_diffusers_warm_up():
    """loop.ema_model gives the bits of the explicit EMA the shipped weights were made with."""
    import torch

    from diffkit.tiny import loop

    torch.manual_seed(0)
    model = torch.nn.Linear(8, 8)
    ema = loop.ema_model(model, 0.999)
    ref = [p.detach().clone() for p in model.parameters()]
    for step in range(1, 6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update_parameters(model)
        decay = min(0.999, (1 + step) / (10 + step))
        ref = [torch.lerp(r, p.detach(), 1 - decay) for r, p in zip(ref, model.parameters())]
        assert all(torch.equal(a, b) for a, b in zip(ema.module.parameters(), ref))


def test_seeds_are_named_in_one_table():
    assert R.seed_for(R.TINY2, "unet.noise") == R.TINY2.seed + 4
    assert len(set(R.SEED_OFFSETS.values())) == len(R.SEED_OFFSETS)  # no two streams share a seed


def test_figure_masks_cover_the_figure_and_not_the_background():
    import random

    from diffkit.tiny import data as D
    from diffkit.tiny import world as W

    rng = random.Random(0)
    for a in (
        W.Attributes("person", occupation="pilot", gender="woman"),
        W.Attributes("shape", color="yellow", shape="circle"),
    ):
        im = W.draw(a, rng)
        px = D.figure_mask(im, a)
        assert 0.05 < px.mean() < 0.5
        m = D.latent_masks([im], [a])
        assert m.shape == (1, 1, 16, 16) and m.dtype.is_floating_point is False
        # every figure pixel lies under a marked latent pixel, and the corners are background
        up = m[0, 0].repeat_interleave(4, 0).repeat_interleave(4, 1).numpy().astype(bool)
        assert up[px].all()
        assert not m[0, 0, 0, 0] or not m[0, 0, -1, -1]
