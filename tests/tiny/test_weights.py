"""The shipped diffkit-tiny weights: an ordinary diffusers folder and an open_clip model, offline."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from diffkit import tiny
from diffkit.tiny import world as w

MB = 1024 * 1024


def test_the_weights_ship_with_the_package():
    # no skip when they are missing: a checkout or wheel without them is broken
    assert (tiny.pipeline_path() / "model_index.json").is_file()
    assert tiny.clip_path().is_file()


@pytest.fixture(scope="module")
def pipe():
    from diffusers import StableDiffusionPipeline

    p = StableDiffusionPipeline.from_pretrained(tiny.pipeline_path())
    p.set_progress_bar_config(disable=True)
    return p


def test_weights_are_small_safetensors():
    files = [f for f in tiny.WEIGHTS_DIR.rglob("*") if f.is_file()]
    # the model card's bar: pipeline 18 MB + judge 7.7 MB + weak judge 6.7 MB (its text tower's
    # CLIP-vocabulary embedding is most of it) = 34.7 MB
    assert sum(f.stat().st_size for f in files) <= 40 * MB
    assert not [f for f in files if f.suffix in (".bin", ".pt", ".pth", ".ckpt")]


def test_stock_pipeline_opens_the_folder(pipe):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    assert isinstance(pipe.unet, UNet2DConditionModel) and isinstance(pipe.vae, AutoencoderKL)
    assert isinstance(pipe.text_encoder, CLIPTextModel) and isinstance(pipe.tokenizer, CLIPTokenizer)
    assert pipe.safety_checker is None
    # diffkit-tiny 2: SD 1.x's geometry at a quarter of the side (issue 11)
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 128
    assert pipe.vae_scale_factor == 8 and pipe.unet.config.in_channels == 4
    assert pipe.tokenizer.model_max_length == 77
    assert pipe.scheduler.config.prediction_type == "epsilon"
    assert type(pipe.scheduler).__name__ == "PNDMScheduler"
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"
    assert pipe.unet.config.addition_embed_type is None  # the text enters only through cross-attention
    assert len(pipe.tokenizer) == 49408


def test_tokenizer_is_clips_bpe(pipe):
    import open_clip

    ref = open_clip.get_tokenizer("ViT-B-32")(["a photo of a woman software developer"])[0].tolist()
    ref = ref[: ref.index(49407) + 1]
    assert pipe.tokenizer("a photo of a woman software developer").input_ids == ref


def test_generates_128px_images_with_guidance(pipe):
    out = pipe(
        ["a red circle", "a woman nurse"],
        num_inference_steps=3,
        guidance_scale=7.5,
        generator=torch.Generator().manual_seed(0),
    )
    assert [im.size for im in out.images] == [(128, 128), (128, 128)]


def test_words_outside_the_world_still_run(pipe):
    out = pipe("an astronaut riding a horse on the moon", num_inference_steps=2, output_type="np")
    assert out.images.shape == (1, 128, 128, 3) and np.isfinite(out.images).all()


def test_clip_loads_through_open_clip_and_zero_shots():
    from diffkit.tiny import clip as tclip

    model, preprocess, tok = tiny.load_clip()
    imgs = [
        w.draw_sample(w.Attributes("person", occupation="teacher", gender=g), seed=1).image for g in ("woman", "man")
    ]
    imgs.append(w.draw_sample(w.Attributes("shape", color="green", shape="square"), seed=1).image)
    probs = tclip.zero_shot(model, preprocess, tok, imgs, labels=("woman", "man", "shape"))
    assert probs.argmax(1).tolist() == [0, 1, 2]


def test_missing_file_names_the_file_and_the_command(tmp_path, monkeypatch):
    shutil.copytree(tiny.WEIGHTS_DIR, tmp_path / "weights")
    monkeypatch.setattr(tiny, "WEIGHTS_DIR", tmp_path / "weights")
    (tmp_path / "weights/pipeline/unet/diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"unet/diffusion_pytorch_model\.safetensors.*python -m diffkit\.tiny\.train",
    ):
        tiny.pipeline_path()
    (tmp_path / "weights/clip/open_clip_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"open_clip_model\.safetensors.*python -m diffkit\.tiny\.train"):
        tiny.load_clip()


def test_corrupt_file_names_the_file_and_the_command(tmp_path, monkeypatch):
    shutil.copytree(tiny.WEIGHTS_DIR, tmp_path / "weights")
    monkeypatch.setattr(tiny, "WEIGHTS_DIR", tmp_path / "weights")
    (tmp_path / "weights/pipeline/vae/diffusion_pytorch_model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(
        OSError,
        match=r"vae/diffusion_pytorch_model\.safetensors is corrupt.*python -m diffkit\.tiny\.train",
    ):
        tiny.pipeline_path()


def test_the_fast_preview_is_faithful_on_held_out_drawings(pipe):
    """Issue 11: the shipped latent → RGB map within RMS 0.10 of the exact decode (on [-1, 1],
    at the preview's resolution) on drawings it was not fitted on."""
    from diffkit.reverse import fast_preview, latent_rgb
    from diffkit.reverse.previews import _folder_latent_rgb

    shipped = _folder_latent_rgb(pipe.vae)
    assert shipped is not None and "pictogram world" in shipped.source
    assert latent_rgb(pipe).source == shipped.source  # what the explorers use
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    cfg = w.WorldConfig(pair_fraction=0.3)
    x = torch.stack(
        [
            torch.from_numpy(np.asarray(s.image, np.float32) / 127.5 - 1).permute(2, 0, 1)
            for s in w.sample_world(32, seed=4242, config=cfg, size=size)
        ]
    )
    with torch.no_grad():
        lat = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
        exact = pipe.vae.decode(lat / pipe.vae.config.scaling_factor).sample.clamp(-1, 1)
    target = torch.nn.functional.avg_pool2d(exact, pipe.vae_scale_factor)
    fast = fast_preview(lat, shipped) * 2 - 1  # [0, 1] → [-1, 1]
    rms = float((fast - target).pow(2).mean().sqrt())
    assert rms <= 0.10, rms


def test_the_training_loss_is_the_shipped_runs():
    import json

    curve = tiny.training_loss()
    assert list(curve.stage.unique()) == ["unet", "polish"]
    unet, polish = curve[curve.stage == "unet"], curve[curve.stage == "polish"]
    meta = json.loads((tiny.pipeline_path() / "diffkit_tiny.json").read_text())
    assert unet.step.max() == meta["recipe"]["unet_steps"] and polish.step.max() == meta["step"]
    assert unet.step.is_monotonic_increasing and polish.step.is_monotonic_increasing
    assert unet.loss.iloc[-1] < unet.loss.iloc[0] / 50  # it learnt
    assert polish.token_loss.iloc[-1] < polish.token_loss.iloc[0] / 3  # the words found their objects
