"""ForwardChainExplorer: scrub an image along the forward chain, in pixels or in latents."""

from __future__ import annotations

import io
from typing import Any

import ipywidgets as W
import numpy as np
import torch
from PIL import Image

from ..checks import check_choice, check_int, check_seed
from ..errors import InputError
from ..forward import q_sample, q_step, to_model_range
from ..i18n import N_
from ..i18n import gettext as _
from ..images import MODEL_RANGE, decode_raw, to_uint8, vae_factor
from ..samples import SAMPLE_NAMES, sample_image
from ..schedules import SCHEDULE_NAMES, NoiseSchedule, from_diffusers, get_schedule
from ._common import Explorer, encode_image, guarded, histogram_image

__all__ = ["ForwardChainExplorer"]


class ForwardChainExplorer(Explorer):
    """An image noised step by step: t slider with play, the histogram of its values turning
    into the N(0, 1) bell, and a button that adds one Markov step of noise.

    At step t every value x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε is drawn from a Gaussian centred on
    √ᾱ_t·x_0 with width √(1−ᾱ_t); the readout gives both.

    Parameters
    ----------
    image
        A PIL image, array or tensor; default the bundled ``astronaut`` photograph.
    pipe
        A Stable Diffusion pipeline (from :func:`diffkit.load_pipeline`) for latent space; its
        VAE encodes the image and its scheduler's ᾱ drives the noise. Default: diffkit-tiny when
        installed; without a pipeline the latent option is disabled.
    schedule
        Schedule name for pixel space.
    """

    def __init__(
        self,
        image: Any = None,
        *,
        pipe: Any = None,
        schedule: str = "linear",
        image_size: int = 128,
        seed: int = 0,
    ) -> None:
        self.seed = check_seed(seed)
        self.image_size = check_int("image_size", image_size, lo=8, hi=1024, hint=N_("128 is the default"))
        check_choice("schedule", schedule, SCHEDULE_NAMES)
        self.pipe = pipe if pipe is not None else _default_pipe()
        self.sample = W.Dropdown(options=list(SAMPLE_NAMES), value="astronaut", description=_("sample"))
        self.upload = W.FileUpload(accept="image/*", multiple=False, description=_("your image"))
        self.schedule = W.Dropdown(options=list(SCHEDULE_NAMES), value=schedule, description=_("schedule"))
        self.space = W.ToggleButtons(options=[(_("pixels"), "pixels"), (_("latents"), "latents")], value="pixels")
        if self.pipe is None:
            self.space.disabled = True
            self.space.tooltip = _("pass pipe=load_pipeline(...) to noise in latent space")
        self.t = W.IntSlider(value=0, min=0, max=999, description="t", layout=W.Layout(width="420px"))
        self.t.add_class("diffkit-t")  # a handle for browser tests and custom CSS
        self.play = W.Play(min=0, max=999, step=5, interval=50)
        self.link((self.play, "value"), (self.t, "value"))
        self.step_button = W.Button(
            description=_("one Markov step"),
            icon="plus",
            tooltip=_("x_{t+1} = √α·x_t + √β·ε, fresh noise with a fixed seed"),
        )
        self.view = W.Image(format="jpeg", layout=W.Layout(width="256px"))
        self.decoded = W.Image(format="jpeg", layout=W.Layout(width="256px", display="none"))
        self.hist = W.Image(format="png")
        self.readout = W.HTML()
        self.markov_steps = 0  # > 0 while showing a state reached by Markov steps
        self._state: torch.Tensor | None = None
        super().__init__(
            [
                W.HBox([self.sample, self.upload]),
                W.HBox([self.schedule, self.space]),
                W.HBox([self.play, self.t, self.step_button]),
                W.HBox([self.view, self.decoded, W.VBox([self.hist, self.readout])]),
            ]
        )
        self.sample.observe(self._on_image, names="value")
        self.upload.observe(self._on_upload, names="value")
        for w in (self.schedule, self.space):
            w.observe(self._on_setup, names="value")
        self.t.observe(self._on_t, names="value")
        self.step_button.on_click(self._on_step)
        self._set_image(image if image is not None else sample_image("astronaut", self.image_size))

    # -- state -------------------------------------------------------------------------
    def _set_image(self, image: Any) -> None:
        x0 = to_model_range(image)
        if x0.ndim != 3:
            raise InputError(_("ForwardChainExplorer shows one image, not a batch"))
        self.x0_pixels = x0
        self._on_setup()

    @guarded
    def _on_image(self, change: Any = None) -> None:
        self._set_image(sample_image(self.sample.value, self.image_size))

    @guarded
    def _on_upload(self, change: Any = None) -> None:
        files = self.upload.value
        if not files:
            return
        content = bytes(files[0]["content"])
        try:
            img = Image.open(io.BytesIO(content)).convert("RGB")
        except Exception as e:
            name = files[0].get("name") or _("the file")
            raise InputError(_("could not read {name} as an image; upload a PNG or JPEG").format(name=name)) from e
        side = min(img.size)
        img = img.crop(
            ((img.width - side) // 2, (img.height - side) // 2, (img.width + side) // 2, (img.height + side) // 2)
        )
        self._set_image(img.resize((self.image_size, self.image_size)))

    @guarded
    def _on_setup(self, change: Any = None) -> None:
        self.sched = self._schedule()
        T = self.sched.num_train_timesteps
        self.t.max = self.play.max = T - 1
        if self.space.value == "latents":
            from ..forward import forward_latents

            f = vae_factor(self.pipe)
            side = f * (self.image_size // f)
            img = (self.x0_pixels[:, :side, :side] + 1) / 2
            self.x0 = forward_latents(self.pipe, img, [0], decode=False)["latents0"]
            self.decoded.layout.display = None
        else:
            self.x0 = self.x0_pixels
            self.decoded.layout.display = "none"
        self.noise = torch.randn(self.x0.shape, generator=torch.Generator().manual_seed(self.seed))
        self._decode_cache: dict[int, bytes] = {}
        self.markov_steps = 0
        self._on_t()

    def _schedule(self) -> NoiseSchedule:
        if self.space.value == "latents":
            return from_diffusers(self.pipe.scheduler, name="pipeline scheduler")
        return get_schedule(self.schedule.value)

    def current(self) -> torch.Tensor:
        """What is shown now: x_t from the closed form, or the state reached by Markov steps."""
        if self.markov_steps and self._state is not None:
            return self._state
        return q_sample(self.x0, int(self.t.value), self.sched, noise=self.noise)

    # -- events ------------------------------------------------------------------------
    @guarded
    def _on_t(self, change: Any = None) -> None:
        if not getattr(self, "_stepping", False):
            self.markov_steps = 0
            self._state = None
        self._render()

    @guarded
    def _on_step(self, button: Any = None) -> None:
        t = int(self.t.value)
        if t + 1 >= self.sched.num_train_timesteps:
            raise InputError(_("already at the last step; move the slider back first"))
        x = self.current()
        self._state = q_step(x, t + 1, self.sched, seed=self.seed + t + 1)
        self.markov_steps += 1
        self._stepping = True
        try:
            self.t.value = t + 1
        finally:
            self._stepping = False

    def _render(self) -> None:
        t = int(self.t.value)
        x = self.current()
        s = self.sched
        centre_scale, width = float(s.sqrt_alphas_cumprod[t]), float(s.sqrt_one_minus_alphas_cumprod[t])
        if self.space.value == "latents":
            self.view.value = encode_image(_latent_grid(x), "png", scale=4)
            self.decoded.value = self._decode(x, t)
            title = _("latent values at t={t}; red: N(0, 1)")
        else:
            self.view.value = encode_image(to_uint8(x, value_range=MODEL_RANGE))
            title = _("pixel values at t={t}; red: N(0, 1)")
        values = x.numpy().ravel()
        self.hist.value = histogram_image(values, centre=0.0, width=1.0, title=title.format(t=t))
        how = (
            _("{n} Markov step(s) from the slider position").format(n=self.markov_steps)
            if self.markov_steps
            else _("closed form q(x_t | x_0)")
        )
        self.readout.value = "<small>{}</small>".format(
            _(
                "t = {t} ({how})<br>each value ~ N(centre = √ᾱ_t·x₀ = {centre:.3f}·x₀, "
                "width = √(1−ᾱ_t) = {width:.3f})<br>mean {mean:+.3f}, std {std:.3f}"
            ).format(t=t, how=how, centre=centre_scale, width=width, mean=values.mean(), std=values.std())
        )

    def _decode(self, latents: torch.Tensor, t: int) -> bytes:
        key = -1 if self.markov_steps else t
        if key not in self._decode_cache:
            img = decode_raw(self.pipe, latents[None])[0]
            self._decode_cache[key] = encode_image(
                to_uint8(img.float().cpu(), value_range=MODEL_RANGE), "jpeg", scale=2
            )
        return self._decode_cache[key]


def _latent_grid(lat: torch.Tensor) -> np.ndarray:
    """Latent channels side by side as grey images (each mapped from [−3, 3] to 0–255)."""
    chans = [((c.clamp(-3, 3) + 3) / 6 * 255).round().to(torch.uint8).numpy() for c in lat.float()]
    grid = np.concatenate([np.pad(c, ((0, 0), (0, 1)), constant_values=255) for c in chans], axis=1)
    return np.repeat(grid[:, :, None], 3, axis=2)


def _default_pipe() -> Any:
    """diffkit-tiny when its weights are installed, else None (latent space then disabled)."""
    try:
        from ..pipeline import load_pipeline

        return load_pipeline("tiny", device="cpu")
    except Exception:
        return None
