"""diffkit.images: the one place for pixels ↔ latents, checked against the pipelines' own code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from diffkit.images import (
    decode_latents,
    from_latents,
    prepare_init_image,
    to_latents,
    to_uint8,
    vae_factor,
)
from diffkit.testing import tiny_random_pipeline


@pytest.fixture(scope="module")
def pipes():
    out = {k: tiny_random_pipeline(k) for k in ("sd", "sd3")}
    for p in out.values():
        p.set_progress_bar_config(disable=True)
    return out


def test_to_uint8_ranges_and_layouts():
    x = torch.tensor([[[-1.0, 0.0], [1.0, 2.0]]]).expand(3, -1, -1)  # (3, 2, 2) in [-1, 1]
    np.testing.assert_array_equal(to_uint8(x, value_range=(-1, 1))[..., 0], [[0, 128], [255, 255]])
    np.testing.assert_array_equal(to_uint8(np.array([[[0.0], [0.5]]]))[..., 1], [[0, 128]])  # grey → RGB
    assert to_uint8(np.zeros((2, 4, 4, 3), np.float32)).shape == (2, 4, 4, 3)
    u = np.full((2, 2, 3), 7, np.uint8)
    assert to_uint8(u) is u
    with pytest.raises(ValueError, match="high > low"):
        to_uint8(x, value_range=(1, 1))


def test_latent_conventions_round_trip_and_match_the_pipelines():
    from diffusers import AutoencoderKL

    z = torch.randn(1, 4, 3, 3)
    sd = AutoencoderKL(
        block_out_channels=[8, 8],
        norm_num_groups=8,
        latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
    )
    assert vae_factor(sd) == 2
    torch.testing.assert_close(to_latents(sd, z), z * sd.config.scaling_factor)
    sd3 = AutoencoderKL.from_config(sd.config, shift_factor=0.0609, scaling_factor=1.5035)
    torch.testing.assert_close(to_latents(sd3, z), (z - 0.0609) * 1.5035)  # SD 3 img2img's encoding
    xl = AutoencoderKL.from_config(sd.config, latents_mean=[0.1] * 4, latents_std=[2.0] * 4)
    torch.testing.assert_close(to_latents(xl, z), (z - 0.1) * xl.config.scaling_factor / 2.0)
    for vae in (sd, sd3, xl):
        torch.testing.assert_close(from_latents(vae, to_latents(vae, z)), z)


@pytest.mark.parametrize("kind", ["sd", "sd3"])
def test_decode_latents_is_the_pipelines_decode(pipes, kind):
    pipe = pipes[kind]
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    out = pipe(
        prompt="x", num_inference_steps=1, latents=latents.clone(), height=32, width=32, output_type="latent"
    ).images
    with torch.no_grad():  # the pipelines' own decode, written out as they write it
        ref = pipe.image_processor.postprocess(
            pipe.vae.decode(from_latents(pipe, out), return_dict=False)[0], output_type="np"
        )[0]
    np.testing.assert_array_equal(decode_latents(pipe, out[0]), ref)


# -- img2img inputs ---------------------------------------------------------------------------


def _photo(mode="RGB"):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).convert(mode)


def test_uint8_array_reads_as_the_same_pil_image():
    img = _photo()
    np.testing.assert_array_equal(np.asarray(prepare_init_image(np.asarray(img))), np.asarray(img))


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "YCbCr", "LA", "RGBA", "I;16", "I", "F"])
def test_every_pil_mode_becomes_rgb(mode):
    img = _photo("L").convert(mode) if mode in ("I;16", "I", "F") else _photo(mode)
    if mode == "F":
        img = Image.fromarray(np.asarray(img, np.float32) / 255.0, mode="F")
    if mode == "I":  # 16-bit values in a 32-bit image (a 0–255 one is ambiguous: tests/test_bad_inputs.py)
        img = Image.fromarray(np.asarray(img, np.int32) * 257, mode="I")
    out = prepare_init_image(img)
    a = np.asarray(out, dtype=np.float32)
    assert a.shape == (8, 8, 3)


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(prepare_init_image(img)).min() == 255


def test_sixteen_bit_is_read_on_its_own_scale():
    a = np.full((4, 4), 65535, np.uint16)
    np.testing.assert_array_equal(prepare_init_image(a), np.ones((4, 4, 3), np.float32))
    img = Image.fromarray(a)  # mode I;16
    np.testing.assert_array_equal(prepare_init_image(img), np.ones((4, 4, 3), np.float32))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.full((4, 4, 3), 200.0), r"must lie in \[0, 1\], got values 200–200; fix: divide a 0–255 array by 255"),
        (np.full((4, 4, 3), -0.5), r"must lie in \[0, 1\]"),
        (np.full((4, 4, 3), np.nan), "NaN or inf"),
        (np.zeros((3, 8, 8)), r"transpose a \(3, H, W\) array"),
        (np.zeros((8, 8, 5)), r"must be \(H, W\), \(H, W, 3\) or \(H, W, 4\)"),
        (np.zeros((2, 8, 8, 3)), r"must be \(H, W\)"),
        (np.zeros((4, 4, 3), np.int32), "must be uint8 .* or uint16"),
        (np.zeros((4, 4, 3), bool), "must hold real numbers"),
        (np.array([["a"]]), "must hold real numbers"),
        (torch.zeros(4, 8, 8), "looks like latents"),
        (torch.zeros(1, 4, 8, 8), "looks like latents"),
        (torch.zeros(2, 3, 8, 8), r"\(3, H, W\) or \(1, 3, H, W\)"),
        (torch.full((3, 8, 8), 2.0), r"must lie in \[0, 1\]"),
        ("cat.png", r"open a file with PIL.Image.open\(path\)"),
        ([[0, 1]], "got list"),
        (None, "got NoneType"),
    ],
)
def test_bad_init_images_get_a_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        prepare_init_image(bad)


@pytest.mark.parametrize("form", ["pil", "uint8", "rgba_pil", "float"])
def test_reverse_chain_img2img_reads_every_form_alike(form):
    from diffkit.reverse import ReverseChain

    pipe = tiny_random_pipeline("sd")
    pipe.set_progress_bar_config(disable=True)
    img = _photo().resize((32, 32))
    given = {
        "pil": img,
        "uint8": np.asarray(img),
        "rgba_pil": img.convert("RGBA"),
        "float": np.asarray(img, np.float32) / 255.0,
    }[form]
    traj = ReverseChain(pipe, "a cat", steps=2, image=given, strength=0.5).run()
    ref = ReverseChain(pipe, "a cat", steps=2, image=img, strength=0.5).run()
    np.testing.assert_array_equal(traj.image, ref.image)
