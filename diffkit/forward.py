"""The forward chain: Gaussian noise added step by step, and its closed form.

One Markov step adds a little Gaussian noise and shrinks the signal a little
(Ho et al. 2020, eq. 2):

    q(x_t | x_{t−1}) = N(x_t; √α_t · x_{t−1}, β_t · I)

Each step depends only on the previous one. Chaining them gives a closed form that
jumps straight from the clean image to any step (eq. 4):

    q(x_t | x_0) = N(x_t; √ᾱ_t · x_0, (1 − ᾱ_t) · I),  i.e.  x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε

Images enter the chain as tensors with values in ``[-1, 1]`` (the DDPM convention);
:func:`to_model_range` converts PIL images, NumPy arrays and torch tensors. Timesteps are
0-based as in diffusers: ``t = 0`` is one step of noise, ``t = T − 1`` the last.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .checks import check_seed
from .errors import InputError
from .i18n import gettext as _
from .schedules import NoiseSchedule, from_diffusers, get_schedule

__all__ = [
    "forward_latents",
    "markov_trajectory",
    "q_sample",
    "q_sample_all",
    "q_step",
    "to_model_range",
    "to_pil",
]

ImageLike = Any  # PIL.Image.Image | np.ndarray | torch.Tensor


def _generator(seed: int | torch.Generator | None, device: torch.device | str = "cpu") -> torch.Generator | None:
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    return torch.Generator(device=device).manual_seed(check_seed(seed))


def _check_finite(x: torch.Tensor, what: str = "x") -> None:
    if not torch.isfinite(x).all():
        raise InputError(
            _("{what} contains NaN or inf; clean the input (e.g. torch.nan_to_num) first").format(what=what)
        )


def to_model_range(image: ImageLike, *, value_range: tuple[float, float] | None = None) -> torch.Tensor:
    """Convert an RGB image to a float32 tensor ``(3, H, W)`` (or ``(B, 3, H, W)``) in ``[-1, 1]``.

    Accepted inputs and the value ranges assumed unless *value_range* says otherwise:

    - ``PIL.Image`` in mode ``"RGB"``: 0–255.
    - NumPy ``(H, W, 3)`` or ``(B, H, W, 3)``: ``uint8`` is 0–255, floats are 0–1.
    - torch ``(3, H, W)`` or ``(B, 3, H, W)``: ``uint8`` is 0–255, floats are 0–1.

    Other modes, shapes, NaN values or values outside the range raise ``ValueError``.
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            raise InputError(
                _("expected an RGB image, got mode {mode!r}; convert it with image.convert('RGB')").format(
                    mode=image.mode
                )
            )
        x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    elif isinstance(image, np.ndarray):
        if image.ndim not in (3, 4) or image.shape[-1] != 3:
            raise InputError(
                _(
                    "expected a NumPy RGB image of shape (H, W, 3) or (B, H, W, 3), got {shape}; "
                    "stack grey images to 3 channels or drop alpha with image[..., :3]"
                ).format(shape=image.shape)
            )
        x = torch.from_numpy(np.array(image, copy=True, order="C"))
        x = x.permute(2, 0, 1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    elif isinstance(image, torch.Tensor):
        if image.ndim not in (3, 4) or image.shape[-3] != 3:
            raise InputError(
                _(
                    "expected a torch RGB image of shape (3, H, W) or (B, 3, H, W), got {shape}; "
                    "channels come first in torch (use x.permute(2, 0, 1))"
                ).format(shape=tuple(image.shape))
            )
        x = image.detach().cpu()
    else:
        raise InputError(
            _("expected a PIL image, NumPy array or torch tensor, got {kind}").format(kind=type(image).__name__)
        )
    if x.dtype == torch.bool or x.dtype.is_complex:
        raise InputError(_("unsupported image dtype {dtype}; use uint8 (0–255) or float (0–1)").format(dtype=x.dtype))
    if value_range is None:
        value_range = (0.0, 255.0) if x.dtype == torch.uint8 else (0.0, 1.0)
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise InputError(
            _("value_range must be (low, high) with low < high, got {value_range}").format(value_range=value_range)
        )
    x = x.to(torch.float32)
    _check_finite(x, "image")
    tol = 1e-6 * (hi - lo)
    if x.numel() and (x.min() < lo - tol or x.max() > hi + tol):
        raise InputError(
            _(
                "image values span [{vmin:.4g}, {vmax:.4g}], outside the assumed range [{lo:g}, {hi:g}]; "
                "pass value_range=(low, high), e.g. (0, 255) for floats holding 8-bit values"
            ).format(vmin=x.min(), vmax=x.max(), lo=lo, hi=hi)
        )
    return ((x - lo) / (hi - lo) * 2.0 - 1.0).clamp_(-1.0, 1.0)


def to_pil(x: torch.Tensor) -> Any:
    """A ``(3, H, W)`` tensor in ``[-1, 1]`` as an RGB ``PIL.Image`` (values outside are clipped)."""
    from PIL import Image

    if x.ndim != 3 or x.shape[0] != 3:
        raise InputError(_("expected a (3, H, W) tensor, got {shape}").format(shape=tuple(x.shape)))
    from .images import MODEL_RANGE, to_uint8

    return Image.fromarray(to_uint8(x, value_range=MODEL_RANGE), mode="RGB")


def _coef(values: np.ndarray, t: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """Gather schedule values at t and shape them to broadcast against a batch like *like*."""
    c = torch.as_tensor(values[t], dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        return c
    return c.reshape(c.shape + (1,) * (like.ndim - 1))


def q_sample(
    x0: torch.Tensor,
    t: int | Sequence[int] | torch.Tensor,
    schedule: NoiseSchedule | str = "linear",
    *,
    noise: torch.Tensor | None = None,
    seed: int | torch.Generator | None = 0,
) -> torch.Tensor:
    """Closed form of the forward chain: x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε (Ho et al. 2020, eq. 4).

    *x0* is any tensor (an image in ``[-1, 1]``, SD latents, a two-pixel point). A scalar
    *t* applies to all of it; a 1-D *t* gives one timestep per item of the batch (first axis).
    ε is *noise* when given, else drawn with *seed*: 0 by default, like every seeded function
    of diffkit, so a call is reproducible; ``seed=None`` draws from torch's global generator.
    """
    s = get_schedule(schedule)
    _check_finite(x0, "x0")
    tt = s.check_timestep(t)
    if tt.ndim > 1 or (tt.ndim == 1 and tt.shape[0] != x0.shape[0]):
        raise InputError(
            _("t must be a scalar or have one entry per item of x0 ({n}), got shape {shape}").format(
                n=x0.shape[0], shape=tt.shape
            )
        )
    x0 = x0 if x0.is_floating_point() else x0.float()
    if noise is None:
        noise = torch.randn(x0.shape, generator=_generator(seed, x0.device), device=x0.device, dtype=x0.dtype)
    elif noise.shape != x0.shape:
        raise InputError(
            _("noise must have the shape of x0 {shape}, got {got}").format(
                shape=tuple(x0.shape), got=tuple(noise.shape)
            )
        )
    return _coef(s.sqrt_alphas_cumprod, tt, x0) * x0 + _coef(s.sqrt_one_minus_alphas_cumprod, tt, x0) * noise


def q_step(
    x_prev: torch.Tensor,
    t: int,
    schedule: NoiseSchedule | str = "linear",
    *,
    noise: torch.Tensor | None = None,
    seed: int | torch.Generator | None = 0,
) -> torch.Tensor:
    """One Markov step q(x_t | x_{t−1}) = N(√α_t x_{t−1}, β_t I) (Ho et al. 2020, eq. 2).

    For ``t = 0`` the previous state is the clean image x_0. The fresh noise is drawn with
    *seed* (default 0, as in :func:`q_sample`; ``None``: torch's global generator).
    """
    s = get_schedule(schedule)
    _check_finite(x_prev, "x_prev")
    tt = s.check_timestep(t)
    if tt.ndim != 0:
        raise InputError(_("q_step takes one timestep, got {t!r}; loop over steps for a trajectory").format(t=t))
    x_prev = x_prev if x_prev.is_floating_point() else x_prev.float()
    if noise is None:
        noise = torch.randn(
            x_prev.shape, generator=_generator(seed, x_prev.device), device=x_prev.device, dtype=x_prev.dtype
        )
    return float(np.sqrt(s.alphas[tt])) * x_prev + float(np.sqrt(s.betas[tt])) * noise


def _timesteps_arg(s: NoiseSchedule, timesteps: Sequence[int] | np.ndarray | None) -> np.ndarray:
    if timesteps is None:
        return np.arange(s.num_train_timesteps)
    tt = s.check_timestep(timesteps)
    if tt.ndim != 1:
        raise InputError(_("timesteps must be a 1-D list of timesteps, got shape {shape}").format(shape=tt.shape))
    return tt


def _check_budget(n_frames: int, x0: torch.Tensor, dtype: torch.dtype, max_bytes: int) -> None:
    need = n_frames * x0.numel() * torch.empty((), dtype=dtype).element_size()
    if need > max_bytes:
        raise InputError(
            _(
                "{n_frames} frames of shape {shape} need {need:.0f} MiB, over max_bytes="
                "{max_mib:.0f} MiB; pass fewer timesteps (e.g. timesteps=range(0, T, 10)), "
                "a smaller image, dtype=torch.float16, or a larger max_bytes"
            ).format(n_frames=n_frames, shape=tuple(x0.shape), need=need / 2**20, max_mib=max_bytes / 2**20)
        )


def markov_trajectory(
    x0: torch.Tensor,
    schedule: NoiseSchedule | str = "linear",
    *,
    seed: int | torch.Generator | None = 0,
    timesteps: Sequence[int] | np.ndarray | None = None,
    max_bytes: int = 2**30,
) -> torch.Tensor:
    """Iterate the Markov chain from x_0 and keep the states at *timesteps* (default: all T).

    Returns a tensor ``(len(timesteps), *x0.shape)``. Each state is drawn from the previous one
    only, with fresh noise each step, so this is the chain itself (slow: T steps).
    """
    s = get_schedule(schedule)
    keep = _timesteps_arg(s, timesteps)
    _check_finite(x0, "x0")
    x = x0 if x0.is_floating_point() else x0.float()
    _check_budget(len(keep), x, x.dtype, max_bytes)
    gen = _generator(seed, x.device)
    out = torch.empty((len(keep), *x.shape), dtype=x.dtype, device=x.device)
    slot = {int(t): i for i, t in enumerate(keep)}
    sqrt_a, sqrt_b = np.sqrt(s.alphas), np.sqrt(s.betas)
    eps = torch.empty_like(x)
    for t in range(int(keep.max()) + 1 if len(keep) else 0):
        eps.normal_(generator=gen)
        x = x * float(sqrt_a[t]) + eps * float(sqrt_b[t])
        if t in slot:
            out[slot[t]] = x
    return out


def q_sample_all(
    x0: torch.Tensor,
    schedule: NoiseSchedule | str = "linear",
    *,
    timesteps: Sequence[int] | np.ndarray | None = None,
    noise: torch.Tensor | None = None,
    seed: int | torch.Generator | None = 0,
    dtype: torch.dtype | None = None,
    max_bytes: int = 2**30,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """x_t for every timestep at once, vectorised: ``(len(timesteps), *x0.shape)``.

    One noise draw ε serves all t, so scrubbing a slider shows the same noise growing
    while the image fades (each frame is still an exact draw from q(x_t | x_0)). *dtype*
    (e.g. ``torch.float16``) and *max_bytes* keep big images within memory; *out* reuses a
    buffer (a slider that re-noises the same image size allocates once).
    """
    s = get_schedule(schedule)
    tt = _timesteps_arg(s, timesteps)
    _check_finite(x0, "x0")
    x0 = x0 if x0.is_floating_point() else x0.float()
    out_dtype = out.dtype if out is not None else (dtype or x0.dtype)
    if out is None:
        _check_budget(len(tt), x0, out_dtype, max_bytes)
    if noise is None:
        noise = torch.randn(x0.shape, generator=_generator(seed, x0.device), device=x0.device, dtype=x0.dtype)
    elif noise.shape != x0.shape:
        raise InputError(
            _("noise must have the shape of x0 {shape}, got {got}").format(
                shape=tuple(x0.shape), got=tuple(noise.shape)
            )
        )
    a = torch.as_tensor(s.sqrt_alphas_cumprod[tt], dtype=x0.dtype, device=x0.device)
    b = torch.as_tensor(s.sqrt_one_minus_alphas_cumprod[tt], dtype=x0.dtype, device=x0.device)
    # x_t for all t is one matrix product: [√ᾱ_t, √(1−ᾱ_t)] (n, 2) @ [x_0; ε] (2, numel)
    coef = torch.stack([a, b], dim=1)
    basis = torch.stack([x0.reshape(-1), noise.reshape(-1)])
    shape = (len(tt), x0.numel())
    if out is None:
        out = torch.empty((len(tt), *x0.shape), dtype=out_dtype, device=x0.device)
    elif tuple(out.shape) != (len(tt), *x0.shape) or not out.is_contiguous():
        raise InputError(
            _("out must be a contiguous tensor of shape {shape}, got {got}").format(
                shape=(len(tt), *x0.shape), got=tuple(out.shape)
            )
        )
    flat = out.view(shape)
    if flat.dtype == x0.dtype:
        torch.mm(coef, basis, out=flat)
    else:  # e.g. float16 frames: compute in x0's precision a chunk at a time
        for i in range(0, len(tt), 64):
            flat[i : i + 64] = coef[i : i + 64] @ basis
    return out


# ---------------------------------------------------------------------------------------
# Latent space: what Stable Diffusion actually noises.
# ---------------------------------------------------------------------------------------


def forward_latents(
    pipe: Any,
    image: ImageLike,
    timesteps: Sequence[int],
    *,
    seed: int = 0,
    decode: bool = True,
) -> dict[str, Any]:
    """Noise an image in a Stable Diffusion pipeline's latent space with its own scheduler.

    VAE-encode the image (:func:`diffkit.images.encode_image`: the latent mean, scaled as the
    pipeline scales it), add noise with
    ``pipe.scheduler.add_noise`` at each timestep (one ε for all, as :func:`q_sample_all`),
    then (optionally) VAE-decode each noisy latent to see it. Returns a dict with
    ``latents0 (C, h, w)``, ``noisy (n, C, h, w)``, ``timesteps`` and ``images`` (``(n, 3, H, W)``
    in ``[-1, 1]``, or ``None``).
    """
    vae, sched = pipe.vae, pipe.scheduler
    x = to_model_range(image)
    x = x[None] if x.ndim == 3 else x
    if x.shape[0] != 1:
        raise InputError(_("forward_latents takes one image"))
    from .images import decode_raw, encode_image, vae_factor

    factor = vae_factor(vae)
    if x.shape[-1] % factor or x.shape[-2] % factor:
        raise InputError(
            _("image size {size} must be a multiple of the VAE factor {factor}; resize or crop it").format(
                size=tuple(x.shape[-2:]), factor=factor
            )
        )
    ts = from_diffusers(sched).check_timestep(timesteps)
    if ts.ndim != 1:
        raise InputError(_("timesteps must be a list of timesteps"))
    device, dtype = vae.device, vae.dtype
    with torch.no_grad():
        lat0 = encode_image(vae, x)
        noise = torch.randn(lat0.shape, generator=torch.Generator().manual_seed(check_seed(seed))).to(device, dtype)
        tt = torch.as_tensor(ts, device=device)
        noisy = sched.add_noise(lat0.expand(len(ts), -1, -1, -1), noise.expand(len(ts), -1, -1, -1), tt)
        images = None
        if decode:
            images = torch.cat([decode_raw(vae, n[None]) for n in noisy]).float().clamp(-1, 1).cpu()
    return {"latents0": lat0[0].float().cpu(), "noisy": noisy.float().cpu(), "timesteps": ts, "images": images}
