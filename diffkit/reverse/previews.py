"""Latents to pictures, three ways: exact, fast and raw.

Stable Diffusion denoises *latents*: 4 channels at 1/8 of the image size (1/2 for the tiny
test pipelines). To see them:

- **exact**: the VAE decoder, exactly as the pipeline decodes its final latents
  (:func:`decode_latents`; batched; :class:`~diffkit.reverse.trajectory.Trajectory` caches it per step).
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

from ..errors import InputError
from ..images import decode_latents, to_latents, to_uint8, vae_factor, vae_of

__all__ = [
    "PUBLISHED_LATENT_RGB",
    "LatentRGB",
    "channel_grid",
    "decode_latents",
    "fast_preview",
    "fit_latent_rgb",
    "latent_channels",
    "latent_rgb",
    "save_latent_rgb",
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
    rms_error
        For a fitted map, its RMS error on the images it was fitted to (``[-1, 1]`` scale);
        None for published coefficients.
    """

    weights: np.ndarray
    bias: np.ndarray
    source: str
    rms_error: float | None = None

    def __post_init__(self) -> None:
        w = np.asarray(self.weights, dtype=np.float64)
        b = np.asarray(self.bias, dtype=np.float64).reshape(-1)
        if w.ndim != 2 or w.shape[1] != 3 or b.shape != (3,):
            raise InputError(f"weights must be (C, 3) and bias (3,), got {w.shape} and {b.shape}")
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


def fit_latent_rgb(pipe_or_vae: Any, *, images: Any = None, size: int = 64, refit: bool = False) -> LatentRGB:
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

    vae = vae_of(pipe_or_vae)
    default_images = images is None
    if default_images and not refit and vae in _FIT_CACHE:
        return _FIT_CACHE[vae]
    factor = vae_factor(vae)
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
        raise InputError(f"image size {tuple(x.shape[-2:])} must be a multiple of the VAE factor {factor}")
    param = next(vae.parameters())
    with torch.no_grad():
        mean = vae.encode(x.to(param.device, param.dtype)).latent_dist.mean
        lat = to_latents(vae, mean).double().cpu()  # (B, C, h, w)
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
        rms_error=resid,
    )
    if default_images:
        _FIT_CACHE[vae] = fit
    return fit


LATENT_RGB_FILE = "latent_rgb.json"
"""A VAE folder may carry its own fitted map under this name (diffkit-tiny's does)."""


def save_latent_rgb(fit: LatentRGB, folder: Any) -> Any:
    """Write *fit* as ``latent_rgb.json`` into a VAE folder (atomically); returns the path."""
    import json
    from pathlib import Path

    from .._files import atomic_write_text

    path = Path(folder) / LATENT_RGB_FILE
    atomic_write_text(
        path,
        json.dumps(
            {
                "weights": np.asarray(fit.weights).tolist(),
                "bias": np.asarray(fit.bias).tolist(),
                "source": fit.source,
                "rms_error": fit.rms_error,
            },
            indent=2,
        )
        + "\n",
    )
    return path


def _folder_latent_rgb(vae: Any) -> LatentRGB | None:
    """The map stored beside the VAE's weights (``latent_rgb.json``), if its folder has one."""
    import json
    from pathlib import Path

    where = vae.config.get("_name_or_path") if hasattr(vae, "config") else None
    path = Path(where) / LATENT_RGB_FILE if where else None
    if path is None or not path.is_file():
        return None
    d = json.loads(path.read_text())
    return LatentRGB(weights=d["weights"], bias=d["bias"], source=d["source"], rms_error=d.get("rms_error"))


def latent_rgb(pipe_or_vae: Any, method: Literal["auto", "published", "fit"] | str = "auto") -> LatentRGB:
    """The latent → RGB map for a pipeline's VAE.

    ``"auto"``: the published coefficients when the VAE is the SD 1.x/2.x or SDXL VAE
    (same architecture and scaling factor); else the map the VAE's folder carries
    (``latent_rgb.json``, see :func:`save_latent_rgb`: diffkit-tiny's is fitted on drawings
    of its own world); else a least-squares fit on photographs (:func:`fit_latent_rgb`).
    ``"published"`` insists on published ones; ``"fit"`` always fits. A key of
    :data:`PUBLISHED_LATENT_RGB` (``"sd"``, ``"sdxl"``, ``"sd-a1111"``, …) picks that set.
    """
    if method in PUBLISHED_LATENT_RGB:
        return PUBLISHED_LATENT_RGB[method]
    vae = vae_of(pipe_or_vae)
    key = _published_key(vae)
    if method == "auto":
        if key:
            return PUBLISHED_LATENT_RGB[key]
        return _folder_latent_rgb(vae) or fit_latent_rgb(vae)
    if method == "published":
        if key is None:
            raise InputError(
                "no published latent → RGB coefficients for this VAE (they exist for the SD 1.x/2.x "
                "and SDXL VAEs); use method='fit' or 'auto'"
            )
        return PUBLISHED_LATENT_RGB[key]
    if method == "fit":
        return fit_latent_rgb(vae)
    raise InputError(
        f"unknown method {method!r}; use 'auto', 'published', 'fit' or one of {sorted(PUBLISHED_LATENT_RGB)}"
    )


def _as_batch(latents: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, bool]:
    x = torch.as_tensor(latents)
    if x.ndim == 3:
        return x[None], True
    if x.ndim != 4:
        raise InputError(f"latents must be (C, h, w) or (B, C, h, w), got shape {tuple(x.shape)}")
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
        raise InputError(f"latents have {x.shape[1]} channels but the map expects {w.shape[0]}")
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
        raise InputError(f"scale must be 'channel', 'global' or a positive number, got {scale!r}")
    out = (x / (2 * s.clamp_min(1e-8)) + 0.5).clamp(0, 1)
    return out[0] if single else out


def channel_grid(latents: torch.Tensor | np.ndarray, *, pad: int = 1, **kwargs: Any) -> np.ndarray:
    """The channels of one latent side by side as a grey ``uint8`` image ``(h, C·(w + pad) − pad)``."""
    ch = latent_channels(latents, **kwargs)
    if ch.ndim != 3:
        raise InputError("channel_grid takes one latent (C, h, w)")
    c, h, w = ch.shape
    grid = torch.ones(h, c * (w + pad) - pad)
    for i in range(c):
        grid[:, i * (w + pad) : i * (w + pad) + w] = ch[i]
    return (grid.numpy() * 255 + 0.5).astype(np.uint8)
