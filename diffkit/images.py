"""Images in, images out: what diffkit accepts as a picture, and how it reads it.

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

__all__ = ["prepare_init_image"]

_WHITE = (255, 255, 255)


def _pil_rgb(img: Any) -> Any:
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img).astype(np.float64)
        if a.min() < 0 or a.max() > 65535:
            raise ValueError(f"a mode {img.mode} image must hold 16-bit values 0–65535, got {a.min():g}–{a.max():g}")
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
        raise ValueError(f"cannot read a PIL image of mode {img.mode!r} as RGB ({e}); convert it with img.convert('RGB')") from e


def _float_array(a: np.ndarray) -> np.ndarray:
    if not np.isfinite(a).all():
        raise ValueError("the image holds NaN or inf values")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0.0 or hi > 1.0:
        hint = "divide a 0–255 array by 255" if hi <= 255 and lo >= 0 else "rescale it to [0, 1]"
        raise ValueError(f"a float image must lie in [0, 1], got values {lo:g}–{hi:g}; {hint}")
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
            raise ValueError(f"an image tensor must be (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}")
        if t.shape[1] != 3:
            what = "latents" if t.shape[1] == 4 else "an image"
            raise ValueError(
                f"an image tensor must have 3 colour channels first, got shape {tuple(image.shape)} "
                f"(this looks like {what}); pass an RGB picture (3, H, W) in [0, 1]"
            )
        if not t.is_floating_point():
            t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
        _float_array(t.float().cpu().numpy())  # the range check
        return t.float()
    if isinstance(image, np.ndarray):
        a = image
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (1, 3, 4)):
            hint = "; transpose a (3, H, W) array with a.transpose(1, 2, 0)" if a.ndim == 3 and a.shape[0] in (3, 4) else ""
            raise ValueError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}{hint}")
        if a.dtype == np.uint8:
            if a.ndim == 3 and a.shape[-1] == 1:
                a = a[..., 0]
            return _pil_rgb(Image.fromarray(a))
        if a.dtype == np.uint16:
            return _float_array(a.astype(np.float64) / 65535.0)
        if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.number):
            raise ValueError(f"an image array must hold numbers (uint8, uint16 or float in [0, 1]), got dtype {a.dtype}")
        if np.issubdtype(a.dtype, np.integer):
            raise ValueError(
                f"an integer image array must be uint8 (0–255) or uint16 (0–65535), got {a.dtype}; "
                "cast it with a.astype(np.uint8) or pass floats in [0, 1]"
            )
        return _float_array(a.astype(np.float32))
    raise ValueError(
        f"image must be a PIL image, a numpy array or a torch tensor, got {type(image).__name__}; "
        "open a file with PIL.Image.open(path)"
    )
