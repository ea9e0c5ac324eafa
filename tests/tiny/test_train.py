"""The training recipe runs end to end on a toy budget, resumes, and exports a loadable pipeline."""

from __future__ import annotations

import dataclasses

import pytest

from diffkit.tiny import train as T


@pytest.mark.slow
def test_recipe_end_to_end_and_resume(tmp_path, monkeypatch):
    from diffusers import StableDiffusionPipeline

    monkeypatch.setattr("diffkit.tiny.quality.quick_check", lambda pipe, **kw: {"n": 0})
    run = tmp_path / "run"
    T._setup(run)
    r = dataclasses.replace(
        T.QUICK,
        vae_steps=2,
        vae_batch=4,
        cache_per_cell=2,
        unet_steps=2,
        unet_batch=4,
        checkpoint_every=1,
        export_every=100,
        clip_steps=2,
        clip_batch=8,
    )
    T.train_vae(r, run, resume=False)
    T.build_cache(r, run)
    # a cache from before the figure masks gets them added, identical to a fresh build's
    import torch

    st = torch.load(run / "latents.pt", weights_only=False)
    masks = st.pop("masks")
    torch.save(st, run / "latents.pt")
    T.build_cache(r, run)
    assert torch.equal(torch.load(run / "latents.pt", weights_only=False)["masks"], masks)
    T.train_unet(r, run, resume=False, minutes=None)
    T.train_unet(dataclasses.replace(r, unet_steps=3), run, resume=True, minutes=None)
    assert "unet: resumed at step 2" in (run / "train.log").read_text()
    from diffkit.tiny import clip as C

    C.train_clip(r, run, resume=False)
    T.export(run, dest=tmp_path / "weights")
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "weights" / "pipeline")
    assert pipe(["a blue square"], num_inference_steps=2, output_type="np").images.shape == (
        1,
        64,
        64,
        3,
    )
    model, preprocess, tok = C.load(tmp_path / "weights" / "clip")
    assert model.visual.image_size == (64, 64)


def test_loss_weights_on_x0_follow_their_formulas():
    """The weight on ‖v̂ − v‖² divided by (SNR + 1) is the weight on ‖x̂₀ − x₀‖²."""
    import torch

    snr = torch.tensor([1e-6, 0.1, 1.0, 4.0, 10.0, 1e4])
    g = T.FULL.min_snr_gamma
    r = dataclasses.replace(T.FULL, loss_weighting="min-snr")
    torch.testing.assert_close(T.loss_weights(snr, r) * (snr + 1), snr.clamp(max=g))
    r = dataclasses.replace(T.FULL, loss_weighting="min-snr+1")
    torch.testing.assert_close(T.loss_weights(snr, r) * (snr + 1), (snr + 1).clamp(max=g))
    # the point of "+1": high-noise steps keep a weight of about 1 on x̂₀, not about 0
    assert T.loss_weights(snr[:1], r) * (snr[:1] + 1) > 0.99
    with pytest.raises(ValueError, match="loss_weighting must be"):
        T.loss_weights(snr, dataclasses.replace(T.FULL, loss_weighting="uniform"))


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
