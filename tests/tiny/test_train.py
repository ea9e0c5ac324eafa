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
