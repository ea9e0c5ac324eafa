"""Per-step records of the reverse chain, and x̂_0 from a model output.

A :class:`StepRecord` is what one U-Net call of :class:`~diffkit.reverse.trace.ReverseChain`
saw and produced; :func:`predicted_x0` is the formula for the clean latents a prediction
implies (used where a scheduler's ``step()`` returns none, and tested against those that do).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..errors import InputError

__all__ = [
    "LATENT_LIKE",
    "QUANTITIES",
    "StepRecord",
    "predicted_x0",
]

QUANTITIES: dict[str, str] = {
    "x_t": "latents",
    "eps_uncond": "noise_pred_uncond",
    "eps_text": "noise_pred_text",
    "eps": "noise_pred",
    "guidance": "guidance_delta",
    "x0_hat": "pred_original_sample",
    "x_prev": "prev_sample",
}
"""Short names of the per-step tensors and the :class:`StepRecord` attributes they stand for."""

LATENT_LIKE = ("latents", "pred_original_sample", "prev_sample")


# ---------------------------------------------------------------------------------------
# x̂_0 from a model output
# ---------------------------------------------------------------------------------------


def predicted_x0(
    model_output: torch.Tensor,
    sample: torch.Tensor,
    *,
    prediction_type: str = "epsilon",
    alpha_bar: float | None = None,
    sigma: float | None = None,
) -> torch.Tensor:
    """The clean latents x̂_0 implied by a model output (Ho et al. 2020, eq. 15; Salimans & Ho 2022 for v).

    Give exactly one of:

    - ``alpha_bar`` for variance-preserving latents x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (DDPM, DDIM,
      PNDM, DPM-Solver, UniPC): ε-prediction x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t, v-prediction
      x̂_0 = √ᾱ_t x_t − √(1−ᾱ_t) v̂.
    - ``sigma`` for σ-scaled latents x = x_0 + σ ε (Euler, Euler ancestral, LMS, Heun):
      ε-prediction x̂_0 = x − σ ε̂, v-prediction x̂_0 = −σ/√(σ²+1) v̂ + x/(σ²+1).

    - ``prediction_type="flow"`` (SD 3's rectified flow, x_t = (1 − σ) x_0 + σ ε, the model
      predicts v = ε − x_0) takes ``sigma`` = the flow-matching σ_t: x̂_0 = x_t − σ v̂.

    ``prediction_type="sample"`` returns the model output itself.
    """
    if (alpha_bar is None) == (sigma is None):
        raise InputError("give exactly one of alpha_bar (variance-preserving latents) or sigma (σ-scaled latents)")
    if prediction_type == "sample":
        return model_output
    if prediction_type == "flow":
        if sigma is None:
            raise InputError("prediction_type='flow' needs sigma (the flow-matching σ_t), not alpha_bar")
        return sample - sigma * model_output
    if prediction_type not in ("epsilon", "v_prediction"):
        raise InputError(
            f"prediction_type must be 'epsilon', 'v_prediction', 'flow' or 'sample', got {prediction_type!r}"
        )
    if alpha_bar is not None:
        a, s = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
        if prediction_type == "epsilon":
            return (sample - s * model_output) / a
        return a * sample - s * model_output
    if prediction_type == "epsilon":
        return sample - sigma * model_output
    return model_output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)


# ---------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------


def prediction_symbol(prediction_type: str) -> str:
    """How to write a model's output: ``"ε̂"`` for ε-prediction, ``"v̂"`` for v and flow."""
    return "ε̂" if prediction_type == "epsilon" else "v̂"


@dataclass(frozen=True)
class StepRecord:
    """What happened in one U-Net call of the reverse chain (see the table in :mod:`diffkit.reverse.trace`).

    Tensors are ``(C, h, w)`` compact copies (float16 on the CPU unless the chain was told
    otherwise); ``noise_pred_uncond`` is None when guidance ≤ 1 skips the unconditional branch.
    ``prev_sample`` of one record is the same tensor object as ``latents`` of the next.
    """

    index: int
    timestep: float
    sigma: float
    alpha_bar: float
    stage: str
    guidance_scale: float
    sigma_scaled: bool
    latents: torch.Tensor = field(repr=False)
    noise_pred_uncond: torch.Tensor | None = field(repr=False)
    noise_pred_text: torch.Tensor = field(repr=False)
    noise_pred: torch.Tensor = field(repr=False)
    pred_original_sample: torch.Tensor = field(repr=False)
    prev_sample: torch.Tensor = field(repr=False)
    x0_source: Literal["scheduler", "formula"] = "scheduler"
    stats: Mapping[str, float] = field(default_factory=dict, repr=False)
    attention: Mapping[str, torch.Tensor] | None = field(default=None, repr=False)
    prediction_type: str = "epsilon"
    """What the model outputs: ``"epsilon"`` (ε̂), ``"v_prediction"`` (v̂ = √ᾱ ε̂ − √(1−ᾱ) x̂_0) or
    ``"flow"`` (SD 3, Flux: v̂ = ε̂ − x̂_0); from the scheduler config, never assumed."""
    guidance: str = "cfg"
    """Which guidance the step used (:data:`~diffkit.reverse.families.GUIDANCE_MODES`): ``"cfg"``
    (two branches combined with ``guidance_scale``), ``"off"`` (one branch), ``"embedded"`` (Flux's
    distilled guidance: ``guidance_scale`` enters the transformer as an embedding, one call, no
    ε̂_u/ε̂_c split) or ``"embedded+cfg"`` (that, plus true CFG with ``true_cfg_scale``)."""
    true_cfg_scale: float | None = None
    """Flux's ``true_cfg_scale`` (the w combining its two branches under true CFG); None elsewhere."""

    @property
    def guidance_label(self) -> str:
        """The step's guidance in words, with its scale(s): what the explorer shows (in the language
        diffkit speaks; no file diffkit writes holds it)."""
        from ..i18n import gettext as _

        w = f"{self.guidance_scale:g}"
        if self.guidance == "embedded":
            return _("guidance embedded (w = {w}): one call, no unconditional branch").format(w=w)
        if self.guidance == "embedded+cfg":
            return _("guidance embedded (w = {w}) + true CFG ({cfg:g}): two calls").format(w=w, cfg=self.true_cfg_scale)
        if self.guidance == "cfg":
            scale = self.true_cfg_scale if self.true_cfg_scale is not None else self.guidance_scale
            return _("classifier-free guidance (w = {w:g}): two branches").format(w=scale)
        return _("no guidance: one branch")

    @property
    def prediction_symbol(self) -> str:
        """How to write what the model predicted: ``"ε̂"`` or ``"v̂"``."""
        return prediction_symbol(self.prediction_type)

    def implied_eps(self) -> torch.Tensor:
        """ε̂, the noise the guided prediction implies, float32 ``(C, h, w)``, whatever the model predicts.

        ε-prediction: the output itself. Otherwise from x_t and x̂_0: VP latents
        ε̂ = (x_t − √ᾱ x̂_0)/√(1−ᾱ); σ-scaled latents ε̂ = (x − x̂_0)/σ; flow ε̂ = (x_t − (1−σ) x̂_0)/σ.
        """
        if self.prediction_type == "epsilon":
            return self.noise_pred.float()
        x, x0 = self.latents.float(), self.pred_original_sample.float()
        if self.prediction_type == "flow":
            return (x - (1 - self.sigma) * x0) / self.sigma
        if self.sigma_scaled:
            return (x - x0) / self.sigma
        return (x - math.sqrt(self.alpha_bar) * x0) / math.sqrt(1 - self.alpha_bar)

    # short names, as in the notation table of docs/concepts.md
    @property
    def x_t(self) -> torch.Tensor:
        """x_t, the latents entering this step."""
        return self.latents

    @property
    def eps_uncond(self) -> torch.Tensor | None:
        """ε̂_u (None without the unconditional branch)."""
        return self.noise_pred_uncond

    @property
    def eps_text(self) -> torch.Tensor:
        """ε̂_c."""
        return self.noise_pred_text

    @property
    def eps(self) -> torch.Tensor:
        """ε̂, the guided prediction."""
        return self.noise_pred

    @property
    def x0_hat(self) -> torch.Tensor:
        """x̂_0."""
        return self.pred_original_sample

    @property
    def x_prev(self) -> torch.Tensor:
        """x_{t−1}."""
        return self.prev_sample

    @property
    def guidance_delta(self) -> torch.Tensor | None:
        """ε̂_c − ε̂_u, the direction classifier-free guidance pushes along (float32)."""
        if self.noise_pred_uncond is None:
            return None
        return self.noise_pred_text.float() - self.noise_pred_uncond.float()

    def get(self, quantity: str) -> torch.Tensor | None:
        """A tensor by attribute name or short name (:data:`QUANTITIES`: ``"x_t"``, ``"eps"``, ``"x0_hat"``, …)."""
        name = QUANTITIES.get(quantity, quantity)
        if name not in QUANTITIES.values():
            raise InputError(f"unknown quantity {quantity!r}; choose one of {sorted(QUANTITIES)}")
        return getattr(self, name)

    def vp_latents(self, quantity: str = "x_t") -> torch.Tensor:
        """Latents on the variance-preserving scale √ᾱ x_0 + √(1−ᾱ) ε, comparable across schedulers.

        σ-schedulers (Euler, LMS, Heun) carry x_0 + σ ε, whose size grows with σ; this divides
        ``latents`` by √(σ² + 1) (what ``scale_model_input`` feeds the U-Net). Other latents are
        returned as they are.
        """
        x = self.get(quantity)
        if QUANTITIES.get(quantity, quantity) == "latents" and self.sigma_scaled:
            return x.float() / math.sqrt(self.sigma**2 + 1)
        return x
