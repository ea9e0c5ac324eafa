"""Previews (exact, fast, raw), exports, and the tokenizer view."""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
import torch

from diffkit.reverse import (
    PUBLISHED_LATENT_RGB,
    LatentRGB,
    PromptTruncatedWarning,
    ReverseChain,
    channel_grid,
    decode_latents,
    fast_preview,
    fit_latent_rgb,
    latent_channels,
    latent_rgb,
    to_uint8,
    tokenize_prompt,
)
from diffkit.reverse.previews import _published_key

PROMPT = "a photo of a cat"


@pytest.fixture(scope="module")
def traj(sd_pipe):
    return ReverseChain(sd_pipe, PROMPT, steps=3, height=32, width=32, scheduler="euler").run()


def test_exact_decode_of_final_latents_is_the_final_image(sd_pipe, traj):
    img = decode_latents(sd_pipe, traj[-1].prev_sample.float())
    # records are float16, so this is close rather than equal
    np.testing.assert_allclose(img, traj.image, atol=2e-2)
    batch = decode_latents(sd_pipe, torch.stack([r.pred_original_sample for r in traj]).float(), batch_size=2)
    assert batch.shape == (3, 32, 32, 3) and batch.min() >= 0 and batch.max() <= 1


def test_decode_is_cached_and_batched(sd_pipe, traj):
    calls = []
    hook = sd_pipe.vae.decoder.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    try:
        a = traj.decode([0, 1, 2], batch_size=2)
        b = traj.decode([2, 0])
        traj.preview(1, "x0_hat", "exact")
    finally:
        hook.remove()
    assert calls == [2, 1]  # one batched pass, then everything from the cache
    np.testing.assert_array_equal(a[[2, 0]], b)
    with pytest.raises(ValueError, match="only latents decode"):
        traj.decode([0], "eps")
    with pytest.raises(IndexError):
        traj.decode([7])


@pytest.mark.parametrize("quantity", ["x_t", "x0_hat", "x_prev", "eps", "eps_text", "eps_uncond", "guidance"])
@pytest.mark.parametrize("mode", ["fast", "raw"])
def test_previews_of_every_quantity(traj, quantity, mode):
    img = traj.preview(0, quantity, mode)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[-1] == 3
    if mode == "fast":
        assert img.shape == (32, 32, 3)
    else:
        assert img.shape[1] == 4 * 16  # four channels side by side


def test_published_coefficients_and_detection():
    assert set(PUBLISHED_LATENT_RGB) >= {"sd", "sdxl"}
    for m in PUBLISHED_LATENT_RGB.values():
        assert (
            m.weights.shape == (4, 3)
            and m.bias.shape == (3,)
            and ("ComfyUI" in m.source or "AUTOMATIC1111" in m.source)
        )

    def fake(sf, blocks=(128, 256, 512, 512)):
        cfg = {"latent_channels": 4, "block_out_channels": list(blocks), "scaling_factor": sf}
        return types.SimpleNamespace(config=cfg, decode=None)

    assert _published_key(fake(0.18215)) == "sd"
    assert _published_key(fake(0.13025)) == "sdxl"
    assert _published_key(fake(0.18215, (32, 64))) is None
    assert latent_rgb(None, "sdxl") is PUBLISHED_LATENT_RGB["sdxl"]
    with pytest.raises(ValueError, match="unknown method"):
        latent_rgb(fake(0.18215), "magic")


def test_least_squares_fit_for_another_vae(sd_pipe):
    from diffkit import sample_image, to_model_range

    with pytest.raises(ValueError, match="no published"):
        latent_rgb(sd_pipe, "published")
    fit = latent_rgb(sd_pipe)  # auto → fit, the tiny VAE is not SD's
    assert isinstance(fit, LatentRGB) and "least-squares" in fit.source
    assert fit_latent_rgb(sd_pipe) is fit  # cached per VAE
    # the fit beats the SD coefficients on this VAE
    x = to_model_range(sample_image("coffee", 32))[None]
    with torch.no_grad():
        lat = sd_pipe.vae.encode(x).latent_dist.mean * sd_pipe.vae.config.scaling_factor
    target = (torch.nn.functional.avg_pool2d(x, 2)[0] + 1) / 2

    def err(m):
        return (fast_preview(lat[0], m) - target.clamp(0, 1)).abs().mean()

    assert err(fit) < err(PUBLISHED_LATENT_RGB["sd"])


def test_fast_preview_raw_channels_and_uint8():
    lat = torch.randn(2, 4, 8, 8)
    rgb = fast_preview(lat, PUBLISHED_LATENT_RGB["sd"], size=(16, 16))
    assert rgb.shape == (2, 3, 16, 16) and 0 <= rgb.min() and rgb.max() <= 1
    with pytest.raises(ValueError, match="channels"):
        fast_preview(torch.randn(3, 8, 8), PUBLISHED_LATENT_RGB["sd"])
    ch = latent_channels(lat[0])
    assert ch.shape == (4, 8, 8) and 0 <= ch.min() and ch.max() <= 1
    assert latent_channels(torch.zeros(4, 2, 2)).eq(0.5).all()
    grid = channel_grid(lat[0])
    assert grid.shape == (8, 4 * 9 - 1) and grid.dtype == np.uint8
    u = to_uint8(rgb[0])
    assert u.shape == (16, 16, 3) and u.dtype == np.uint8


def test_exports(traj, tmp_path):
    strip = traj.save_strip(tmp_path / "strip.png", max_frames=2)
    from PIL import Image

    im = Image.open(strip)
    assert im.size == (3 * 32 + 2 * 2, 32)  # 2 steps + the final image
    gif = traj.save_gif(tmp_path / "steps.gif", mode="fast")
    g = Image.open(gif)
    assert g.n_frames == 4
    fast = traj.frames("x_t", "fast")
    assert len(fast) == 4 and all(f.shape == (32, 32, 3) for f in fast)
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="imageio-ffmpeg"):
            traj.save_mp4(tmp_path / "steps.mp4")
    else:  # pragma: no cover - depends on the environment
        assert traj.save_mp4(tmp_path / "steps.mp4").stat().st_size > 0


def test_memory_accounting(traj):
    n = traj.nbytes()
    assert n == (1 + 5 * 3) * 4 * 16 * 16 * 2  # x_t once, then 5 tensors a step, float16
    assert traj.stack("x0_hat").shape == (3, 4, 16, 16)


# ---------------------------------------------------------------------------------------
# The tokenizer's view
# ---------------------------------------------------------------------------------------


def test_tokens_ids_and_padding(sd_pipe):
    view = tokenize_prompt(sd_pipe, "A photo of an astronaut")
    assert view.max_length == 77 and len(view.ids) == 77 and len(view.tokens) == 77
    assert view.words == ("<|startoftext|>", "a", "photo", "of", "an", "astronaut", "<|endoftext|>")
    assert view.n_tokens == 7 and not view.truncated and view.dropped == ""
    assert view.ids[0] == sd_pipe.tokenizer.bos_token_id and view.ids[6] == sd_pipe.tokenizer.eos_token_id
    assert view.ids[7:] == (sd_pipe.tokenizer.pad_token_id,) * 70
    assert view.attention_mask == (1,) * 7 + (0,) * 70
    assert view.index("astronaut") == 5 and view.index(2) == 2
    df = view.to_frame()
    assert (
        len(df) == 77
        and df.is_padding.sum() == 70
        and list(df.columns) == ["position", "token", "word", "id", "is_padding"]
    )
    # the same ids the pipeline feeds its text encoder
    ids = sd_pipe.tokenizer("A photo of an astronaut", padding="max_length", max_length=77, truncation=True).input_ids
    assert list(view.ids) == ids


def test_too_long_prompt_names_the_dropped_words(sd_pipe):
    prompt = " ".join(["dog"] * 72) + " running across a sunny green meadow today"
    with pytest.warns(PromptTruncatedWarning) as rec:
        view = tokenize_prompt(sd_pipe, prompt)
    msg = str(rec[0].message)
    assert "'sunny green meadow today'" in msg and "75" in msg
    assert view.truncated and view.dropped == "sunny green meadow today" and view.n_tokens == 77
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fits = tokenize_prompt(sd_pipe, " ".join(["dog"] * 75))
        assert not fits.truncated
        quiet = tokenize_prompt(sd_pipe, prompt, warn=False)
        assert quiet.truncated
    with pytest.raises(ValueError, match="must be a string"):
        tokenize_prompt(sd_pipe, ["a", "b"])


def test_cli_writes_strip_gif_and_csv(tiny_sd_dir, tmp_path):
    import argparse

    import pandas as pd

    from diffkit.reverse.cli import add_commands

    parser = argparse.ArgumentParser(prog="diffkit")
    add_commands(parser.add_subparsers(dest="command"))
    out = tmp_path / "rev"
    args = parser.parse_args(
        [
            "reverse",
            "a red cube",
            "--model",
            str(tiny_sd_dir),
            "--steps",
            "2",
            "--scheduler",
            "euler",
            "--height",
            "32",
            "--width",
            "32",
            "--out",
            str(out),
        ]
    )
    assert args.func(args) == 0
    assert {p.name for p in out.iterdir()} == {
        "strip.png",
        "steps.gif",
        "final.png",
        "steps.csv",
        "records.csv",
        "tokens.csv",
    }
    df = pd.read_csv(out / "steps.csv")
    assert set(df.step) == {0, 1} and "x0_hat" in set(df.quantity)
    assert list(pd.read_csv(out / "records.csv").guidance) == ["cfg", "cfg"]  # the model's own w, 7.5


def test_cli_on_a_flux_folder_says_what_each_step_did(tmp_path):
    import pandas as pd

    from diffkit.reverse.cli import run_reverse
    from diffkit.testing import save_tiny_random_pipeline

    folder = save_tiny_random_pipeline(tmp_path / "flux", "flux")
    lines: list[str] = []
    run_reverse(
        "a woman pilot", out=tmp_path / "rev", model=str(folder), steps=2, height=32, width=32, log=lines.append
    )
    rec = pd.read_csv(tmp_path / "rev" / "records.csv")
    assert list(rec.guidance) == ["embedded", "embedded"] and set(rec.prediction_type) == {"flow"}
    assert "v̂  guidance embedded (w = 3.5)" in lines[0]  # the pipeline's own default guidance
    tokens = pd.read_csv(tmp_path / "rev" / "tokens.csv")
    assert list(tokens.word[:4]) == ["a", "woman", "pilot", "</s>"]  # T5's tokens: the ones in the attention
    run_reverse(
        "a woman pilot",
        out=tmp_path / "cfg",
        model=str(folder),
        steps=2,
        height=32,
        width=32,
        negative_prompt="a man",
        true_cfg_scale=4.0,
        max_sequence_length=16,
        log=lines.append,
    )
    assert list(pd.read_csv(tmp_path / "cfg" / "records.csv").guidance) == ["embedded+cfg"] * 2


def test_cli_guidance_flag_has_diffusers_name_and_keeps_its_old_one():
    import argparse

    from diffkit.reverse.cli import add_commands

    parser = argparse.ArgumentParser(prog="diffkit")
    add_commands(parser.add_subparsers(dest="command"))
    for flag in ("--guidance-scale", "--guidance"):
        assert parser.parse_args(["reverse", "a red cube", flag, "3.5"]).guidance_scale == 3.5


def test_a_vae_folder_can_carry_its_own_map(tiny_sd_dir, tmp_path):
    import shutil

    from diffusers import AutoencoderKL

    from diffkit.reverse.previews import LATENT_RGB_FILE, save_latent_rgb

    folder = tmp_path / "vae"
    shutil.copytree(tiny_sd_dir / "vae", folder)
    mine = LatentRGB(weights=np.eye(4, 3), bias=[0.1, 0.2, 0.3], source="a fit of my own", rms_error=0.05)
    assert save_latent_rgb(mine, folder) == folder / LATENT_RGB_FILE
    vae = AutoencoderKL.from_pretrained(folder)
    got = latent_rgb(vae)
    assert got.source == "a fit of my own" and got.rms_error == 0.05
    np.testing.assert_array_equal(got.weights, mine.weights)
    np.testing.assert_array_equal(got.bias, mine.bias)
    assert "least-squares" in latent_rgb(vae, "fit").source  # "fit" still fits
    (folder / LATENT_RGB_FILE).unlink()
    assert "least-squares" in latent_rgb(AutoencoderKL.from_pretrained(folder)).source


class _Collect:
    """A logging handler that keeps the messages it sees (for library loggers that do not propagate)."""

    def __init__(self, name):
        import logging

        self.logger, self.messages = logging.getLogger(name), []
        self.handler = logging.Handler()
        self.handler.emit = lambda record: self.messages.append(record.getMessage())

    def __enter__(self):
        # the library's level may have been raised by an earlier test's setup: show warnings here
        self.level = self.logger.level
        self.logger.setLevel("WARNING")
        self.logger.addHandler(self.handler)
        return self.messages

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)


def test_measuring_a_long_prompt_prints_no_library_notice(sd_pipe):
    """tokenize_prompt measures an over-long prompt on purpose: transformers' "indexing errors" notice
    (03's student output once showed it) stays out, and diffkit's own warning names the dropped words."""
    with _Collect("transformers") as seen, pytest.warns(UserWarning, match="dropped"):
        tokenize_prompt(sd_pipe, " ".join(["dog"] * 100))
    assert not [m for m in seen if "indexing errors" in m], seen


def test_an_img2img_chain_prints_no_empty_float32_notice(sd_pipe):
    """diffusers' from_pipe warns about modules "that should be kept in float32: []" even when there are
    none; diffkit drops that one notice (six lines per img2img chain in 04's output) and nothing else."""
    import logging

    from diffkit import ReverseChain

    image = np.full((64, 64, 3), 200, dtype=np.uint8)
    with _Collect("diffusers") as seen:
        ReverseChain(sd_pipe, "a cat", image=image, strength=0.5, steps=2, seed=0, height=64, width=64).run()
        logging.getLogger("diffusers.models.modeling_utils").warning(
            "There are modules in X that should be kept in float32: ['norm']. Casting directly …"
        )
    assert not [m for m in seen if "kept in float32: []" in m], seen
    assert [m for m in seen if "kept in float32: ['norm']" in m], "a notice naming real modules must still show"
