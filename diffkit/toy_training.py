"""Training, on the two-pixel toy: a small network learns what the exact denoiser knows.

The two-pixel world (:mod:`diffkit.toy`) has a few data points, so its ideal denoiser
E[x_0 | x_t] is known in closed form (:func:`diffkit.toy.optimal_denoiser`). Here a small
MLP learns to predict the noise with DDPM's simple loss (Ho et al. 2020, Algorithm 1):

    L_simple = E_{x_0, t, ε} ‖ε − ε̂_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖²

and :meth:`ToyDenoiser.compare` measures how close it came to the ideal. What the network
predicts is the *total* noise ε in x_t, the one that the closed form q(x_t | x_0) mixed in, not
the small noise of the last step t − 1 → t.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .checks import check_seed
from .errors import InputError
from .schedules import NoiseSchedule, get_schedule
from .toy import optimal_denoiser, pixels_to_model

__all__ = ["ToyDenoiser", "train_toy_denoiser"]

#: The seed article's two-pixel image and two others, so the denoiser must tell them apart.
TOY_DATA = ((170.0, 150.0), (60.0, 200.0), (220.0, 40.0))


def _time_features(t: torch.Tensor, n: int, num_train_timesteps: int) -> torch.Tensor:
    """Sinusoidal features of the timestep (Vaswani et al.), diffusers' own function, the one
    SD's U-Net uses; t is rescaled to 0 … 1000 so any T gets the same frequencies."""
    from diffusers.models.embeddings import get_timestep_embedding

    return get_timestep_embedding(
        t.float() * (1000.0 / num_train_timesteps), n, flip_sin_to_cos=False, downscale_freq_shift=0
    )


class _MLP(torch.nn.Module):
    def __init__(self, hidden: int, n_time: int, num_train_timesteps: int) -> None:
        super().__init__()
        self.n_time, self.T = n_time, num_train_timesteps
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2 + n_time, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, 2),
        )

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x_t, _time_features(t, self.n_time, self.T)], dim=1))


@dataclass
class ToyDenoiser:
    """A trained noise predictor ε̂_θ(x_t, t) for two-pixel images, with its loss curve."""

    model: torch.nn.Module
    data: torch.Tensor  # (N, 2) in model units ([-1, 1])
    schedule: NoiseSchedule
    losses: np.ndarray  # L_simple per training step

    @torch.no_grad()
    def eps(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """ε̂_θ(x_t, t) for points *x_t* ``(M, 2)``."""
        tt = torch.full((x_t.shape[0],), int(self.schedule.check_timestep(t)))
        return self.model(x_t.float(), tt)

    @torch.no_grad()
    def x0_hat(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """x̂_0 = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t, the clean image the prediction implies."""
        ab = float(self.schedule.alphas_cumprod[int(t)])
        return (x_t.float() - (1 - ab) ** 0.5 * self.eps(x_t, t)) / ab**0.5

    def sample(self, *, n_chains: int = 200, seed: int = 0, eta: float = 1.0) -> np.ndarray:
        """Run the reverse chain from N(0, I) with this network as the denoiser ("now run it
        backwards"): :func:`diffkit.toy.two_pixel_reverse` with the learnt x̂_0 in place of
        the exact one. Returns ``(T + 1, n_chains, 2)`` in model units."""
        from .toy import two_pixel_reverse

        pixels = ((self.data + 1.0) * 127.5).tolist()
        return two_pixel_reverse(
            pixels,
            self.schedule,
            n_chains=n_chains,
            seed=seed,
            eta=eta,
            denoiser=lambda x, t: self.x0_hat(x, t),
        )

    @torch.no_grad()
    def compare(self, t: int, *, n: int = 2000, seed: int = 0) -> dict[str, float]:
        """The learnt ε̂ against the exact denoiser's at timestep *t*, on x_t ~ q(x_t).

        Returns the RMS of the exact ε̂ (``eps_rms``), of the learnt one's difference from it
        (``eps_error``), and the same for x̂_0 (``x0_error``, in model units).
        """
        ab = float(self.schedule.alphas_cumprod[int(self.schedule.check_timestep(t))])
        gen = torch.Generator().manual_seed(check_seed(seed))
        x0 = self.data[torch.randint(0, len(self.data), (n,), generator=gen)]
        x_t = ab**0.5 * x0 + (1 - ab) ** 0.5 * torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
        x0_opt = optimal_denoiser(x_t, int(t), self.data, self.schedule)
        eps_opt = (x_t - ab**0.5 * x0_opt) / (1 - ab) ** 0.5
        eps = self.eps(x_t, int(t)).double()
        rms = lambda a: float(a.pow(2).mean().sqrt())  # noqa: E731
        return {
            "t": int(t),
            "eps_rms": rms(eps_opt),
            "eps_error": rms(eps - eps_opt),
            "x0_error": rms(self.x0_hat(x_t, int(t)).double() - x0_opt),
        }


def train_toy_denoiser(
    data_pixels: Sequence[Sequence[float]] = TOY_DATA,
    schedule: NoiseSchedule | str = "linear",
    *,
    steps: int = 3000,
    batch_size: int = 256,
    hidden: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
) -> ToyDenoiser:
    """Train a small MLP to predict the noise of two-pixel images with L_simple.

    Each step draws a batch of data points x_0, timesteps t uniform in 0 … T − 1 and noise
    ε ~ N(0, I), forms x_t by the closed form, and takes an Adam step on ‖ε − ε̂_θ(x_t, t)‖²
    (Ho et al. 2020, Algorithm 1). Seeded: the same arguments give the same network. Takes a few
    seconds on a laptop CPU at the defaults.

    Parameters
    ----------
    data_pixels
        The two-pixel images (0–255 values) the model must learn to return to.
    schedule
        The noise schedule (a name of :data:`diffkit.SCHEDULE_NAMES` or a :class:`NoiseSchedule`).
    steps, batch_size, hidden, lr
        Training length, batch, MLP width and Adam's learning rate.
    seed
        Seeds the initial weights and every draw.
    """
    for name, value, lo in (("steps", steps, 1), ("batch_size", batch_size, 1), ("hidden", hidden, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
            raise InputError(f"{name} must be an integer ≥ {lo}, got {value!r}")
    if not (isinstance(lr, (int, float)) and 0 < lr < 1):
        raise InputError(f"lr must be a number in (0, 1), got {lr!r}; 2e-3 is usual")
    s = get_schedule(schedule) if isinstance(schedule, str) else schedule
    data = pixels_to_model(data_pixels).reshape(-1, 2).double()
    gen = torch.Generator().manual_seed(check_seed(seed))
    with torch.random.fork_rng():
        torch.manual_seed(int(seed))
        model = _MLP(int(hidden), 16, s.num_train_timesteps)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sqrt_ab = torch.tensor(np.asarray(s.sqrt_alphas_cumprod), dtype=torch.float32)
    sqrt_1mab = torch.tensor(np.asarray(s.sqrt_one_minus_alphas_cumprod), dtype=torch.float32)
    x_data = data.float()
    losses = np.empty(int(steps))
    for i in range(int(steps)):
        x0 = x_data[torch.randint(0, len(x_data), (batch_size,), generator=gen)]
        t = torch.randint(0, s.num_train_timesteps, (batch_size,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        x_t = sqrt_ab[t, None] * x0 + sqrt_1mab[t, None] * eps
        loss = (model(x_t, t) - eps).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses[i] = loss.item()
    model.eval()
    return ToyDenoiser(model=model, data=data, schedule=s, losses=losses)
