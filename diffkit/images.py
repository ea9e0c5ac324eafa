"""Images, pixels and latents: the one place diffkit converts between them.

- :func:`to_uint8`: a picture in a stated value range ([0, 1] by default, or [−1, 1]) as ``uint8`` HWC.
- :func:`vae_factor`, :func:`to_latents`, :func:`from_latents`: the VAE's downsampling factor, and
  the map between the VAE's own latents and the space the denoiser works in, exactly as the
  pipelines do it (SD: × ``scaling_factor``; SDXL with ``latents_mean``/``latents_std``: standardised
  then scaled; SD 3: ``(z − shift_factor) × scaling_factor``).
- :func:`encode_image` (pixels → denoiser latents) and :func:`decode_latents` (denoiser latents →
  pixels, through the pipeline's ``VaeImageProcessor.postprocess``), with the pipelines' float16
  ``force_upcast``; :func:`decode_raw` gives the VAE's raw output.
- :func:`prepare_init_image`: what is accepted as an img2img picture, and how it is read.
- :func:`pack_latents`, :func:`unpack_latents`: Flux's latent tokens, each a 2×2 patch of latent
  pixels (all channels) flattened into one vector, and back to the latent grid.

:func:`prepare_init_image` turns anything a user may hold (a PIL image of any mode, a ``uint8``,
``uint16`` or float array, a tensor) into what a pipeline's ``VaeImageProcessor.preprocess``
reads correctly, or raises a :class:`ValueError` that says how to fix it. The rules:

=======================================  ====================================================
input                                    read as
=======================================  ====================================================
PIL ``RGB``                              as it is
PIL ``RGBA``/``LA``/``PA``/``P`` with    composited over white (transparent → white)
transparency
PIL ``L``, ``P``, ``CMYK``, ``YCbCr``…   converted to RGB by PIL
PIL ``I;16``/``I`` (16-bit)              value / 65535, grey → RGB
``uint8`` array ``(H, W[, 1|3|4])``      as the same PIL image (so array and PIL agree exactly)
``uint16`` array                         value / 65535
float array ``(H, W[, 1|3|4])``          must lie in [0, 1]
tensor ``(3, H, W)`` or ``(1, 3, H, W)``  float in [0, 1]
=======================================  ====================================================

Four-channel *tensors* are refused (they look like latents, not pictures), and so are
channel-first arrays, floats outside [0, 1] and anything that is not an image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError
from .i18n import gettext as _

__all__ = [
    "MODEL_RANGE",
    "decode_latents",
    "decode_raw",
    "encode_image",
    "from_latents",
    "pack_latents",
    "prepare_init_image",
    "to_latents",
    "to_uint8",
    "unpack_latents",
    "vae_factor",
    "vae_of",
]

MODEL_RANGE = (-1.0, 1.0)
"""The value range of images as the models see them (pixels scaled from [0, 255]); pictures for
people are in [0, 1] (``to_uint8``'s default)."""

_WHITE = (255, 255, 255)


def to_uint8(image: Any, *, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """A picture as ``uint8`` HWC: ``(3, H, W)`` / ``(H, W, 3)`` / batches of either, values in *value_range*.

    Values are clipped to the range and mapped to 0–255 (rounded half up). A ``uint8`` array is
    returned as it is; one grey channel is repeated to three.
    """
    import torch

    if isinstance(image, np.ndarray) and image.dtype == np.uint8:
        return image
    a = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, np.float32)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    elif a.ndim == 4 and a.shape[1] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(0, 2, 3, 1)
    lo, hi = value_range
    if not hi > lo:
        raise InputError(
            _("value_range must be (low, high) with high > low, got {value_range}; fix: e.g. (-1, 1)").format(
                value_range=value_range
            )
        )
    a = (np.clip(a, lo, hi) - lo) / (hi - lo)
    out = (a * 255 + 0.5).astype(np.uint8)
    return np.repeat(out, 3, axis=-1) if out.ndim >= 3 and out.shape[-1] == 1 else out


def vae_of(pipe_or_vae: Any) -> Any:
    """The VAE of a pipeline (its ``vae``), or *pipe_or_vae* itself when it is one."""
    vae = getattr(pipe_or_vae, "vae", pipe_or_vae)
    if not hasattr(vae, "decode") or not hasattr(vae, "config"):
        raise InputError(
            _("{kind} has no VAE; fix: pass a diffusers pipeline or AutoencoderKL").format(
                kind=type(pipe_or_vae).__name__
            )
        )
    return vae


def vae_factor(pipe_or_vae: Any) -> int:
    """How many pixels per latent pixel, per side: 8 for SD's VAE, 2 for the tiny test VAEs."""
    return 2 ** (len(vae_of(pipe_or_vae).config.block_out_channels) - 1)


def _mean_std(cfg: Any, z: Any) -> tuple[Any, Any] | None:
    import torch

    lm, ls = cfg.get("latents_mean"), cfg.get("latents_std")
    if lm is None or ls is None:
        return None
    c = z.shape[1]
    return (
        torch.tensor(lm).view(1, c, 1, 1).to(z.device, z.dtype),
        torch.tensor(ls).view(1, c, 1, 1).to(z.device, z.dtype),
    )


def to_latents(pipe_or_vae: Any, z: Any) -> Any:
    """The VAE's latents ``(B, C, h, w)`` → the denoiser's latent space (see the module doc)."""
    cfg = vae_of(pipe_or_vae).config
    ms = _mean_std(cfg, z)
    if ms is not None:
        return (z - ms[0]) * cfg.scaling_factor / ms[1]
    if cfg.get("shift_factor") is not None:
        return (z - cfg.shift_factor) * cfg.scaling_factor
    return z * cfg.scaling_factor


def from_latents(pipe_or_vae: Any, z: Any) -> Any:
    """The denoiser's latents → the VAE's own latent space; the inverse of :func:`to_latents`, written as the pipelines write it."""
    cfg = vae_of(pipe_or_vae).config
    ms = _mean_std(cfg, z)
    if ms is not None:
        return z * ms[1] / cfg.scaling_factor + ms[0]
    if cfg.get("shift_factor") is not None:
        return z / cfg.scaling_factor + cfg.shift_factor
    return z / cfg.scaling_factor


def pack_latents(z: Any) -> Any:
    """Latents ``(B, C, h, w)`` → Flux's tokens ``(B, h/2 · w/2, 4C)``: each 2×2 patch of latent
    pixels, channel first then row then column, is one token (as ``FluxPipeline`` packs them)."""
    b, c, h, w = z.shape
    if h % 2 or w % 2:
        msg = _("latents {shape} cannot be packed 2×2; fix: use an even latent height and width")
        raise InputError(msg.format(shape=tuple(z.shape)))
    z = z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)  # (B, h/2, w/2, C, 2, 2)
    return z.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: Any, grid: tuple[int, int]) -> Any:
    """Flux's tokens ``(B, N, 4C)`` on a *grid* of ``(h/2, w/2)`` tokens → latents ``(B, C, h, w)``;
    the inverse of :func:`pack_latents` (a permutation: no value changes)."""
    b, n, d = tokens.shape
    gh, gw = int(grid[0]), int(grid[1])
    if gh * gw != n or d % 4:
        raise InputError(
            _(
                "{n} tokens of width {d} do not fill a {gh}×{gw} grid of 2×2 patches; "
                "fix: pass the grid the pipeline used (its img_ids)"
            ).format(n=n, d=d, gh=gh, gw=gw)
        )
    z = tokens.view(b, gh, gw, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)  # (B, C, h/2, 2, w/2, 2)
    return z.reshape(b, d // 4, gh * 2, gw * 2)


def _upcast(pipe_or_vae: Any) -> bool:
    """Whether the pipeline runs this float16 VAE in float32 (SDXL's ``force_upcast``)."""
    import torch

    vae = vae_of(pipe_or_vae)
    return vae.dtype == torch.float16 and bool(vae.config.get("force_upcast", False))


def encode_image(pipe_or_vae: Any, x: Any) -> Any:
    """Pixels ``(B, 3, H, W)`` in [−1, 1] → denoiser latents ``(B, C, H/f, W/f)`` (the posterior mean)."""
    import torch

    vae = vae_of(pipe_or_vae)
    f = vae_factor(vae)
    if x.shape[-1] % f or x.shape[-2] % f:
        msg = _("image size {size} must be a multiple of the VAE factor {factor}; fix: resize or crop it")
        raise InputError(msg.format(size=tuple(x.shape[-2:]), factor=f))
    param = next(vae.parameters())
    with torch.no_grad():
        mean = vae.encode(x.to(param.device, param.dtype)).latent_dist.mean
    return to_latents(vae, mean)


def decode_raw(pipe_or_vae: Any, z: Any, *, generator: Any = None) -> Any:
    """Denoiser latents ``(B, C, h, w)`` → the VAE's raw output ``(B, 3, H, W)`` (≈ [−1, 1], unclamped).

    The pipelines' own steps: :func:`from_latents`, then ``vae.decode`` (*generator* passed where
    given, as SD passes its own). A float16 VAE whose config says ``force_upcast`` runs in float32,
    as SDXL's pipeline does (for SD's float16 VAE too, where it only avoids overflow).
    """
    import torch

    vae = vae_of(pipe_or_vae)
    param = (
        next(vae.post_quant_conv.parameters())
        if getattr(vae, "post_quant_conv", None) is not None
        else next(vae.parameters())
    )
    upcast = _upcast(vae)
    try:
        if upcast:
            vae.to(dtype=torch.float32)
        z = z.to(param.device, torch.float32 if upcast else param.dtype)
        with torch.no_grad():
            z = from_latents(vae, z)
            if generator is None:
                return vae.decode(z, return_dict=False)[0]
            return vae.decode(z, return_dict=False, generator=generator)[0]
    finally:
        if upcast:
            vae.to(dtype=torch.float16)


def decode_latents(pipe: Any, latents: Any, *, batch_size: int = 4, generator: Any = None) -> np.ndarray:
    """Decode denoiser latents exactly as the pipeline decodes its output: ``(B, H, W, 3)`` float32 in [0, 1].

    :func:`decode_raw`, then ``pipe.image_processor.postprocess`` (the pipeline's
    ``VaeImageProcessor``). ``(C, h, w)`` gives one ``(H, W, 3)`` image. The safety checker and
    watermark are not applied (a :class:`~diffkit.reverse.ReverseChain`'s final image is the
    pipeline's own, with them).
    """
    import torch

    if batch_size < 1:
        raise InputError(_("batch_size must be ≥ 1, got {batch_size}; fix: pass e.g. 8").format(batch_size=batch_size))
    x = torch.as_tensor(latents)
    single = x.ndim == 3
    if single:
        x = x[None]
    if x.ndim != 4:
        msg = _("latents must be (C, h, w) or (B, C, h, w), got shape {shape}; fix: add or drop the batch axis")
        raise InputError(msg.format(shape=tuple(x.shape)))
    out = []
    for start in range(0, x.shape[0], batch_size):
        img = decode_raw(pipe, x[start : start + batch_size], generator=generator)
        out.append(pipe.image_processor.postprocess(img, output_type="np"))
    images = np.concatenate(out).astype(np.float32, copy=False)
    return images[0] if single else images


def _pil_rgb(img: Any) -> Any:
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img).astype(np.float64)
        if a.min() < 0 or a.max() > 65535:
            raise InputError(
                _(
                    "a mode {mode} image must hold 16-bit values 0–65535, got {lo:g}–{hi:g}; "
                    "fix: rescale it, or pass floats in [0, 1]"
                ).format(mode=img.mode, lo=a.min(), hi=a.max())
            )
        if img.mode == "I" and 0 < a.max() <= 255:
            # 32-bit integer pixels that never pass 255: 8-bit values (as many converters leave
            # them), or a 16-bit picture darker than 0.4 %; read as 16-bit it would be near-black
            raise InputError(
                _(
                    "a mode 'I' image whose values only reach {hi:g} is ambiguous: 8-bit values (0–255) in a "
                    "32-bit image, or a nearly black 16-bit one; fix: img.convert('L') for 8-bit values, or pass "
                    "np.asarray(img) / 65535 as floats for 16-bit ones"
                ).format(hi=a.max())
            )
        return np.repeat((a / 65535.0).astype(np.float32)[..., None], 3, axis=-1)
    if img.mode == "F":
        return _float_array(np.asarray(img, dtype=np.float32))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as e:
        raise InputError(
            _(
                "cannot read a PIL image of mode {mode!r} as RGB ({error}); fix: convert it with img.convert('RGB')"
            ).format(mode=img.mode, error=e)
        ) from e


def _float_array(a: np.ndarray) -> np.ndarray:
    if not np.isfinite(a).all():
        raise InputError(
            _("the image holds NaN or inf values; fix: replace them (np.nan_to_num) or pass another picture")
        )
    lo, hi = float(a.min()), float(a.max())
    if lo < 0.0 or hi > 1.0:
        hint = _("divide a 0–255 array by 255") if hi <= 255 and lo >= 0 else _("rescale it to [0, 1]")
        raise InputError(
            _("a float image must lie in [0, 1], got values {lo:g}–{hi:g}; fix: {hint}").format(lo=lo, hi=hi, hint=hint)
        )
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if a.shape[-1] == 4:  # over white
        a = a[..., :3] * a[..., 3:] + (1.0 - a[..., 3:])
    return np.ascontiguousarray(a, dtype=np.float32)


def prepare_init_image(image: Any) -> Any:
    """An init image in a form ``VaeImageProcessor.preprocess`` reads correctly (see the module table).

    Returns a PIL ``RGB`` image, a float32 array ``(H, W, 3)`` in [0, 1], or a float tensor
    ``(1, 3, H, W)`` in [0, 1].

    Raises
    ------
    ValueError
        For anything that is not an RGB picture or cannot be read unambiguously, naming the fix.
    """
    import torch
    from PIL import Image

    if isinstance(image, Image.Image):
        return _pil_rgb(image)
    if isinstance(image, torch.Tensor):
        t = image.detach()
        if t.ndim == 3:
            t = t[None]
        if t.ndim != 4 or t.shape[0] != 1:
            raise InputError(
                _("an image tensor must be (3, H, W) or (1, 3, H, W), got {shape}; fix: pass one picture").format(
                    shape=tuple(image.shape)
                )
            )
        if t.shape[1] != 3:
            what = _("latents") if t.shape[1] == 4 else _("an image")
            raise InputError(
                _(
                    "an image tensor must have 3 colour channels first, got shape {shape} "
                    "(this looks like {what}); fix: pass an RGB picture (3, H, W) in [0, 1]"
                ).format(shape=tuple(image.shape), what=what)
            )
        if not t.is_floating_point():
            t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
        _float_array(t.float().cpu().numpy())  # the range check
        return t.float()
    if isinstance(image, np.ndarray):
        a = image
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (1, 3, 4)):
            hint = (
                _(": transpose a (3, H, W) array with a.transpose(1, 2, 0)")
                if a.ndim == 3 and a.shape[0] in (3, 4)
                else ""
            )
            raise InputError(
                _(
                    "an image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {shape}; "
                    "fix: pass one RGB picture{hint}"
                ).format(shape=a.shape, hint=hint)
            )
        if a.dtype == np.uint8:
            if a.ndim == 3 and a.shape[-1] == 1:
                a = a[..., 0]
            return _pil_rgb(Image.fromarray(a))
        if a.dtype == np.uint16:
            return _float_array(a.astype(np.float64) / 65535.0)
        if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
            raise InputError(
                _(
                    "an image array must hold real numbers (uint8, uint16 or float in [0, 1]), got dtype {dtype}; "
                    "fix: convert it, e.g. a.astype(np.uint8)"
                ).format(dtype=a.dtype)
            )
        if np.issubdtype(a.dtype, np.integer):
            raise InputError(
                _(
                    "an integer image array must be uint8 (0–255) or uint16 (0–65535), got {dtype}; "
                    "fix: cast it with a.astype(np.uint8) or pass floats in [0, 1]"
                ).format(dtype=a.dtype)
            )
        return _float_array(a.astype(np.float32))
    raise InputError(
        _(
            "image must be a PIL image, a numpy array or a torch tensor, got {kind}; "
            "fix: open a file with PIL.Image.open(path)"
        ).format(kind=type(image).__name__)
    )
