"""Latents to pictures, three ways: exact, fast and raw.

Stable Diffusion denoises *latents*: 4 channels at 1/8 of the image size (1/2 for the tiny
test pipelines). To see them:

- **exact**: the VAE decoder, exactly as the pipeline decodes its final latents
  (:func:`decode_latents`; batched; :class:`~diffkit.reverse.trace.Trajectory` caches it per step).
- **fast**: one linear map per pixel, latent (4) → RGB (3) plus a bias (:func:`fast_preview`).
  Published coefficients exist for the SD 1.x/2.x VAE and the SDXL VAE (ComfyUI
  ``comfy/latent_formats.py``, classes ``SD15`` and ``SDXL``; AUTOMATIC1111
  ``modules/sd_vae_approx.py``, ``cheap_approximation``, from
  https://discuss.huggingface.co/t/decoding-latents-to-rgb-without-upscaling/23204/2).
  For any other VAE (diffkit-tiny, a random test VAE) :func:`fit_latent_rgb` fits the map by
  least squares on a few photographs encoded by that VAE.
- **raw**: each latent channel as a grey image (:func:`latent_channels`).

All three take latents in the space the U-Net works in (the VAE's latents times
``vae.config.scaling_factor``) and return values in ``[0, 1]``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

__all__ = [
    "PUBLISHED_LATENT_RGB",
    "LatentRGB",
    "channel_grid",
    "decode_latents",
    "fast_preview",
    "fit_latent_rgb",
    "latent_channels",
    "latent_rgb",
    "to_uint8",
]


@dataclass(frozen=True)
class LatentRGB:
    """A linear latent → RGB map: ``rgb = latents · weights + bias``, RGB in ``[-1, 1]``.

    Attributes
    ----------
    weights
        ``(C, 3)``: one row per latent channel, columns R, G, B.
    bias
        ``(3,)``.
    source
        Where the numbers come from (a citation, or the fit that produced them).
    """

    weights: np.ndarray
    bias: np.ndarray
    source: str

    def __post_init__(self) -> None:
        w = np.asarray(self.weights, dtype=np.float64)
        b = np.asarray(self.bias, dtype=np.float64).reshape(-1)
        if w.ndim != 2 or w.shape[1] != 3 or b.shape != (3,):
            raise ValueError(f"weights must be (C, 3) and bias (3,), got {w.shape} and {b.shape}")
        w.setflags(write=False)
        b.setflags(write=False)
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "bias", b)


_COMFY = "ComfyUI comfy/latent_formats.py"
_A1111 = "AUTOMATIC1111 modules/sd_vae_approx.py cheap_approximation"

PUBLISHED_LATENT_RGB: dict[str, LatentRGB] = {
    # SD 1.x and 2.x share one VAE (kl-f8, scaling factor 0.18215).
    "sd": LatentRGB(
        weights=[
            [0.3512, 0.2297, 0.3227],
            [0.3250, 0.4974, 0.2350],
            [-0.2829, 0.1762, 0.2721],
            [-0.2120, -0.2616, -0.7177],
        ],
        bias=[0.0, 0.0, 0.0],
        source=f"{_COMFY}, class SD15",
    ),
    "sdxl": LatentRGB(
        weights=[
            [0.3651, 0.4232, 0.4341],
            [-0.2533, -0.0042, 0.1068],
            [0.1076, 0.1111, -0.0362],
            [-0.3165, -0.2492, -0.2188],
        ],
        bias=[0.1084, -0.0175, -0.0011],
        source=f"{_COMFY}, class SDXL",
    ),
    "sd-a1111": LatentRGB(
        weights=[
            [0.298, 0.207, 0.208],
            [0.187, 0.286, 0.173],
            [-0.158, 0.189, 0.264],
            [-0.184, -0.271, -0.473],
        ],
        bias=[0.0, 0.0, 0.0],
        source=f"{_A1111} (SD 1.x)",
    ),
    "sdxl-a1111": LatentRGB(
        weights=[
            [0.3448, 0.4168, 0.4395],
            [-0.1953, -0.0290, 0.0250],
            [0.1074, 0.0886, -0.0163],
            [-0.3730, -0.2499, -0.2088],
        ],
        bias=[0.0, 0.0, 0.0],
        source=f"{_A1111} (SDXL)",
    ),
}
"""Published latent → RGB coefficients; ``"sd"`` and ``"sdxl"`` are the defaults."""

_FIT_CACHE: weakref.WeakKeyDictionary[Any, LatentRGB] = weakref.WeakKeyDictionary()


def _vae_of(pipe_or_vae: Any) -> Any:
    vae = getattr(pipe_or_vae, "vae", pipe_or_vae)
    if not hasattr(vae, "decode") or not hasattr(vae, "config"):
        raise ValueError(f"{type(pipe_or_vae).__name__} has no VAE; pass a diffusers pipeline or AutoencoderKL")
    return vae


def _published_key(vae: Any) -> str | None:
    """``"sd"`` or ``"sdxl"`` when *vae* has the architecture and scaling of those VAEs."""
    cfg = vae.config
    if int(cfg.get("latent_channels", 0)) != 4 or list(cfg.get("block_out_channels", [])) != [128, 256, 512, 512]:
        return None
    sf = float(cfg.get("scaling_factor", 0.0))
    if abs(sf - 0.18215) < 1e-6:
        return "sd"
    if abs(sf - 0.13025) < 1e-6:
        return "sdxl"
    return None


def _to_model_latents(vae: Any, mean: torch.Tensor) -> torch.Tensor:
    """Encoder latents → the U-Net's latent space (scaling factor, SDXL-style mean/std if set)."""
    cfg = vae.config
    lm, ls = cfg.get("latents_mean"), cfg.get("latents_std")
    if lm is not None and ls is not None:
        c = mean.shape[1]
        lm = torch.tensor(lm, dtype=mean.dtype, device=mean.device).view(1, c, 1, 1)
        ls = torch.tensor(ls, dtype=mean.dtype, device=mean.device).view(1, c, 1, 1)
        return (mean - lm) * cfg.scaling_factor / ls
    return mean * cfg.scaling_factor


def fit_latent_rgb(
    pipe_or_vae: Any, *, images: Any = None, size: int = 64, refit: bool = False
) -> LatentRGB:
    """Fit a linear latent → RGB map for any VAE by least squares.

    Encodes a few photographs (diffkit's bundled samples unless *images* is given) with the
    VAE, averages each image over the VAE's ``f × f`` pixel blocks, and solves
    ``[latents, 1] · [W; b] ≈ rgb`` over all latent pixels (``torch.linalg.lstsq``, float64).
    The fit is cached per VAE object; ``refit=True`` recomputes it.

    Parameters
    ----------
    pipe_or_vae
        A pipeline or its ``AutoencoderKL``.
    images
        Optional RGB images (PIL, arrays or tensors accepted by :func:`diffkit.to_model_range`),
        all the same size, a multiple of the VAE factor.
    size
        Side of the bundled sample images when *images* is None.
    """
    from ..forward import to_model_range

    vae = _vae_of(pipe_or_vae)
    default_images = images is None
    if default_images and not refit and vae in _FIT_CACHE:
        return _FIT_CACHE[vae]
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if images is None:
        from ..samples import SAMPLE_NAMES, sample_image

        size = max(factor, size // factor * factor)
        images = [sample_image(n, size) for n in SAMPLE_NAMES]
        # plus flat colour patches so that the bias and the colour axes are pinned down
        rng = np.random.default_rng(0)
        for _ in range(4):
            images.append(np.ones((size, size, 3), np.float32) * rng.uniform(0, 1, 3).astype(np.float32))
    x = torch.stack([to_model_range(im) for im in images])  # (B, 3, H, W) in [-1, 1]
    if x.shape[-1] % factor or x.shape[-2] % factor:
        raise ValueError(f"image size {tuple(x.shape[-2:])} must be a multiple of the VAE factor {factor}")
    param = next(vae.parameters())
    with torch.no_grad():
        mean = vae.encode(x.to(param.device, param.dtype)).latent_dist.mean
        lat = _to_model_latents(vae, mean).double().cpu()  # (B, C, h, w)
    target = torch.nn.functional.avg_pool2d(x.double(), factor)  # (B, 3, h, w)
    a = lat.permute(0, 2, 3, 1).reshape(-1, lat.shape[1])
    a = torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype)], dim=1)
    y = target.permute(0, 2, 3, 1).reshape(-1, 3)
    sol = torch.linalg.lstsq(a, y).solution  # (C + 1, 3)
    resid = (a @ sol - y).pow(2).mean().sqrt().item()
    fit = LatentRGB(
        weights=sol[:-1].numpy(),
        bias=sol[-1].numpy(),
        source=f"least-squares fit on {len(images)} images encoded by this VAE (RMS error {resid:.3f} in [-1, 1])",
    )
    if default_images:
        _FIT_CACHE[vae] = fit
    return fit


def latent_rgb(
    pipe_or_vae: Any, method: Literal["auto", "published", "fit"] | str = "auto"
) -> LatentRGB:
    """The latent → RGB map for a pipeline's VAE.

    ``"auto"``: the published coefficients when the VAE is the SD 1.x/2.x or SDXL VAE
    (same architecture and scaling factor), else a least-squares fit (:func:`fit_latent_rgb`).
    ``"published"`` insists on published ones; ``"fit"`` always fits. A key of
    :data:`PUBLISHED_LATENT_RGB` (``"sd"``, ``"sdxl"``, ``"sd-a1111"``, …) picks that set.
    """
    if method in PUBLISHED_LATENT_RGB:
        return PUBLISHED_LATENT_RGB[method]
    vae = _vae_of(pipe_or_vae)
    key = _published_key(vae)
    if method == "auto":
        return PUBLISHED_LATENT_RGB[key] if key else fit_latent_rgb(vae)
    if method == "published":
        if key is None:
            raise ValueError(
                "no published latent → RGB coefficients for this VAE (they exist for the SD 1.x/2.x "
                "and SDXL VAEs); use method='fit' or 'auto'"
            )
        return PUBLISHED_LATENT_RGB[key]
    if method == "fit":
        return fit_latent_rgb(vae)
    raise ValueError(
        f"unknown method {method!r}; use 'auto', 'published', 'fit' or one of {sorted(PUBLISHED_LATENT_RGB)}"
    )


def _as_batch(latents: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, bool]:
    x = torch.as_tensor(latents)
    if x.ndim == 3:
        return x[None], True
    if x.ndim != 4:
        raise ValueError(f"latents must be (C, h, w) or (B, C, h, w), got shape {tuple(x.shape)}")
    return x, False


def fast_preview(
    latents: torch.Tensor | np.ndarray,
    coefficients: LatentRGB | Any,
    *,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Latents → RGB in ``[0, 1]`` with a linear map, at latent resolution (or *size*).

    Parameters
    ----------
    latents
        ``(C, h, w)`` or ``(B, C, h, w)``, in the U-Net's latent space.
    coefficients
        A :class:`LatentRGB`, or a pipeline / VAE (then :func:`latent_rgb` picks the map).
    size
        ``(H, W)`` to upsample to (nearest neighbour, so the latent pixels stay visible).

    Returns
    -------
    torch.Tensor
        ``(3, h, w)`` or ``(B, 3, h, w)`` float32 in ``[0, 1]``, on the CPU.
    """
    if not isinstance(coefficients, LatentRGB):
        coefficients = latent_rgb(coefficients)
    x, single = _as_batch(latents)
    x = x.detach().float().cpu()
    w = torch.tensor(coefficients.weights, dtype=torch.float32)
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"latents have {x.shape[1]} channels but the map expects {w.shape[0]}")
    b = torch.tensor(coefficients.bias, dtype=torch.float32)
    rgb = torch.einsum("bchw,cr->brhw", x, w) + b.view(1, 3, 1, 1)
    rgb = ((rgb + 1) / 2).clamp(0, 1)
    if size is not None:
        rgb = torch.nn.functional.interpolate(rgb, size=tuple(size), mode="nearest")
    return rgb[0] if single else rgb


def latent_channels(
    latents: torch.Tensor | np.ndarray, *, scale: Literal["channel", "global"] | float = "channel"
) -> torch.Tensor:
    """Each latent channel as a grey image in ``[0, 1]``: ``(C, h, w)`` (or ``(B, C, h, w)``).

    ``scale="channel"`` stretches each channel's own ±max|value| to ``[0, 1]`` (0 maps to grey
    0.5); ``"global"`` uses one range for all channels; a number ``s`` maps ``[-s, s]``.
    """
    x, single = _as_batch(latents)
    x = x.detach().float().cpu()
    if scale == "channel":
        s = x.abs().amax(dim=(2, 3), keepdim=True)
    elif scale == "global":
        s = x.abs().amax(dim=(1, 2, 3), keepdim=True)
    elif isinstance(scale, (int, float)) and scale > 0:
        s = torch.tensor(float(scale))
    else:
        raise ValueError(f"scale must be 'channel', 'global' or a positive number, got {scale!r}")
    out = (x / (2 * s.clamp_min(1e-8)) + 0.5).clamp(0, 1)
    return out[0] if single else out


def channel_grid(latents: torch.Tensor | np.ndarray, *, pad: int = 1, **kwargs: Any) -> np.ndarray:
    """The channels of one latent side by side as a grey ``uint8`` image ``(h, C·(w + pad) − pad)``."""
    ch = latent_channels(latents, **kwargs)
    if ch.ndim != 3:
        raise ValueError("channel_grid takes one latent (C, h, w)")
    c, h, w = ch.shape
    grid = torch.ones(h, c * (w + pad) - pad)
    for i in range(c):
        grid[:, i * (w + pad) : i * (w + pad) + w] = ch[i]
    return (grid.numpy() * 255 + 0.5).astype(np.uint8)


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """A ``[0, 1]`` image, ``(3, H, W)`` / ``(H, W, 3)`` / batches of either, as ``uint8`` HWC."""
    a = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, np.float32)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    elif a.ndim == 4 and a.shape[1] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(0, 2, 3, 1)
    return (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)


def _is_sdxl(pipe: Any) -> bool:
    """SDXL (not SD 3, which also has a second text encoder but a transformer)."""
    return (hasattr(pipe, "text_encoder_2") or hasattr(pipe, "tokenizer_2")) and not hasattr(pipe, "transformer")


def decode_latents(
    pipe: Any,
    latents: torch.Tensor,
    *,
    batch_size: int = 4,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """Decode latents with the pipeline's VAE exactly as the pipeline decodes its output.

    The same steps as ``pipe(...)`` after its loop: divide by ``scaling_factor`` (SDXL: undo
    ``latents_mean``/``latents_std`` when the VAE config has them, and run a float16 VAE with
    ``force_upcast`` in float32), ``vae.decode``, then ``pipe.image_processor.postprocess``.
    The safety checker and watermark are not applied (:class:`ReverseChain` applies them to
    the final image, as the pipeline does).

    Parameters
    ----------
    pipe
        A Stable Diffusion (XL) pipeline.
    latents
        ``(C, h, w)`` or ``(B, C, h, w)`` in the U-Net's latent space (any float dtype/device).
    batch_size
        Latents decoded per VAE call.
    generator
        Passed to ``vae.decode`` as the SD pipeline does (ignored by ``AutoencoderKL``).

    Returns
    -------
    numpy.ndarray
        ``(B, H, W, 3)`` (or ``(H, W, 3)`` for one latent) float32 in ``[0, 1]``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    x, single = _as_batch(latents)
    out = []
    for start in range(0, x.shape[0], batch_size):
        img = _vae_decode(pipe, x[start : start + batch_size], generator=generator)
        out.append(pipe.image_processor.postprocess(img, output_type="np"))
    images = np.concatenate(out).astype(np.float32, copy=False)
    return images[0] if single else images


def _vae_decode(pipe: Any, z: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(B, C, h, w)`` U-Net latents → the VAE's raw output ``(B, 3, H, W)`` (≈ [-1, 1], unclamped),
    with the pipeline's own steps: SD divides by ``scaling_factor`` and passes *generator*;
    SDXL also undoes ``latents_mean``/``latents_std`` and runs a float16 ``force_upcast`` VAE in float32."""
    vae = pipe.vae
    cfg = vae.config
    param = next(vae.post_quant_conv.parameters()) if hasattr(vae, "post_quant_conv") else next(vae.parameters())
    sdxl = _is_sdxl(pipe)
    needs_upcasting = sdxl and vae.dtype == torch.float16 and bool(cfg.get("force_upcast", False))
    lm, ls = cfg.get("latents_mean"), cfg.get("latents_std")
    try:
        if needs_upcasting:
            vae.to(dtype=torch.float32)
        z = z.to(param.device, torch.float32 if needs_upcasting else param.dtype)
        with torch.no_grad():
            if sdxl and lm is not None and ls is not None:
                c = z.shape[1]
                mean = torch.tensor(lm).view(1, c, 1, 1).to(z.device, z.dtype)
                std = torch.tensor(ls).view(1, c, 1, 1).to(z.device, z.dtype)
                z = z * std / cfg.scaling_factor + mean
            elif cfg.get("shift_factor") is not None:  # SD 3: x = z / scaling_factor + shift_factor
                z = z / cfg.scaling_factor + cfg.shift_factor
            else:
                z = z / cfg.scaling_factor
            if sdxl:
                return vae.decode(z, return_dict=False)[0]
            return vae.decode(z, return_dict=False, generator=generator)[0]
    finally:
        if needs_upcasting:
            vae.to(dtype=torch.float16)
