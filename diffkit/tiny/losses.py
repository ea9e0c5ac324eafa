"""The loss terms of diffkit-tiny 2's training, one short function each, with its source.

TokenCompose's token loss lives beside its attention probe, in :mod:`diffkit.tiny.grounding`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError

__all__ = [
    "figure_weighted_mse",
    "kl_loss",
    "loss_weights",
    "low_noise_gap",
    "multi_positive_infonce",
    "preview_loss",
    "reconstruction_loss",
    "snr",
]


def reconstruction_loss(rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 + MSE between the VAE's reconstruction and the image (Esser et al. 2021, VQGAN, eq. 4,
    without its perceptual and GAN terms: flat pictograms need neither)."""
    return (rec - x).abs().mean() + (rec - x).pow(2).mean()


def kl_loss(posterior) -> torch.Tensor:
    """KL(q(z | x) ‖ N(0, I)) of the VAE's diagonal Gaussian posterior (Kingma & Welling 2014,
    eq. 10; weighted 1e-6, as in Rombach et al. 2022, LDM's KL-reg autoencoders)."""
    return posterior.kl().mean()


def preview_loss(preview: torch.nn.Module, z: torch.Tensor, x: torch.Tensor, factor: int) -> torch.Tensor:
    """MSE of a linear latent → RGB map against the image averaged over each latent pixel's
    f × f block: the explorers' fast preview (AUTOMATIC1111's ``sd_vae_approx`` linear
    coefficients, here learnt jointly with the VAE so that they stay faithful)."""
    target = F.avg_pool2d(x, factor)
    prev = preview(z.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    return (prev - target).pow(2).mean()


def snr(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """SNR_t = ᾱ_t / (1 − ᾱ_t) (Kingma et al. 2021, Variational Diffusion Models, eq. 2)."""
    a = alphas_cumprod[t]
    return a / (1 - a)


def loss_weights(snr: torch.Tensor, cfg) -> torch.Tensor:
    """Per-sample weights on ‖ε̂ − ε‖², stated as weights on ‖x̂₀ − x₀‖².

    ``"min-snr"`` puts min(SNR, γ) on x̂₀ (Hang et al. 2023, "Efficient Diffusion Training via
    Min-SNR Weighting Strategy"); ``"min-snr+1"`` puts min(SNR + 1, γ) on it: the same cap at low
    noise, but a floor of 1 at high noise, where min-SNR's weight fades to 0 and the model stops
    listening to the text. The x̂₀ error is σ/α times the ε error, so a weight *w* on ‖ε̂ − ε‖² is
    w / SNR on x̂₀; the ε weight is clamped to [``cfg.eps_weight_floor``, ``cfg.eps_weight_cap``]
    (SD's schedule ends at SNR ≈ 0.005, where it would be 200).
    """
    g = cfg.min_snr_gamma
    if cfg.loss_weighting not in ("min-snr", "min-snr+1"):
        raise InputError(f"loss_weighting must be 'min-snr' or 'min-snr+1', got {cfg.loss_weighting!r}")
    x0_weight = snr.clamp(max=g) if cfg.loss_weighting == "min-snr" else (snr + 1).clamp(max=g)
    return (x0_weight / snr).clamp(min=cfg.eps_weight_floor, max=cfg.eps_weight_cap)


def figure_weighted_mse(pred, target, w, masks, figure_weight: float) -> torch.Tensor:
    """The weighted denoising loss E[w(t) ‖ε̂ − ε‖²] (Ho et al. 2020, eq. 14, with the weight
    *w* of :func:`loss_weights`), the figure's latent pixels counting *figure_weight* times the
    background's (mean weight per image 1; *masks* from :func:`diffkit.tiny.data.latent_masks`)."""
    err = (pred - target).pow(2)
    if figure_weight != 1.0:
        wmap = 1.0 + (figure_weight - 1.0) * masks
        err = err * wmap / wmap.mean(dim=(1, 2, 3), keepdim=True)
    return (w * err.mean(dim=(1, 2, 3))).mean()


def low_noise_gap(pred_text: torch.Tensor, pred_empty: torch.Tensor) -> torch.Tensor:
    """‖ε̂(x_t, text) − ε̂(x_t, "")‖² on nearly clean samples: once the picture is nearly clean
    the text cannot change the noise in it, yet the two branches disagreed there (RMS 0.1–0.2 at
    t ≤ 21), and guidance 7.5 multiplies that disagreement by 6.5 before PNDM and LMS extrapolate
    it (classifier-free guidance: Ho & Salimans 2022, eq. 6)."""
    return (pred_text - pred_empty).pow(2).mean()


def multi_positive_infonce(logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE (Radford et al. 2021, Figure 3) with several, soft positives per
    row and column (SupCon's average over positives, Khosla et al. 2020, eq. 2): *valid[i, j]* says
    how far caption j truthfully describes image i."""
    li = -(F.log_softmax(logits, 1) * valid / valid.sum(1, keepdim=True)).sum(1).mean()
    lt = -(F.log_softmax(logits, 0) * valid / valid.sum(0, keepdim=True)).sum(0).mean()
    return (li + lt) / 2
