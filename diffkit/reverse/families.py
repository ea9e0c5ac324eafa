"""Pipeline families: which diffusers classes the reverse chain records, and what each one's tensors are.

One small :class:`Family` adapter per family (SD 1.x/2.x, SDXL, SD 3, Flux) says which pipeline
classes, which denoiser (``unet`` or ``transformer``), whether it is flow matching, what its
model predicts, how its denoiser calls make one step (one batched call, or Flux's one call per
branch), what its latents look like (Flux packs 2×2 patches into tokens) and which guidance a
step used; :func:`family_of` finds a pipeline's, :func:`scheduler_for` gives a chain a fresh
scheduler and :func:`working_pipeline` the pipeline it runs (never the user's object).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError
from ..i18n import gettext as _

__all__ = [
    "FAMILIES",
    "FLOW_SCHEDULERS",
    "GUIDANCE_MODES",
    "Family",
    "FluxFamily",
    "family_of",
    "scheduler_for",
    "working_pipeline",
]

GUIDANCE_MODES: dict[str, str] = {
    "cfg": "classifier-free guidance: two branches, combined with w",
    "off": "no guidance: one branch (w ≤ 1, or no negative prompt for Flux's true CFG)",
    "embedded": "guidance embedded: w enters the transformer as an embedding, one call, no unconditional branch",
    "embedded+cfg": "guidance embedded, and true CFG: two calls (prompt, negative prompt) combined with true_cfg_scale",
}
"""What :attr:`StepRecord.guidance` says a step did."""

FLOW_SCHEDULERS: dict[str, str] = {"flow_euler": "FlowMatchEulerDiscreteScheduler"}
"""Short names of the flow-matching schedulers SD 3 pipelines accept."""


@dataclass(frozen=True)
class Family:
    """What :class:`~diffkit.reverse.trace.ReverseChain` needs to know about one pipeline family."""

    name: str
    txt2img: str
    img2img: str
    denoiser: str  # the pipeline attribute that predicts: "unet" or "transformer"
    flow: bool  # flow matching: x_t = (1 − σ) x_0 + σ ε and the model predicts v = ε − x_0

    @property
    def schedulers(self) -> dict[str, str]:
        """Short scheduler names this family accepts, and their diffusers classes."""
        from ..pipeline import SCHEDULERS

        return FLOW_SCHEDULERS if self.flow else SCHEDULERS

    def size_factor(self, work: Any) -> int:
        """Image sizes must be multiples of this: the VAE factor (× SD 3's patch size)."""
        from ..images import vae_factor

        return vae_factor(work) * (int(getattr(work, "patch_size", 1) or 1) if self.flow else 1)

    def prediction_type(self, scheduler: Any) -> str:
        """``"epsilon"``, ``"v_prediction"`` (from the scheduler config) or ``"flow"``."""
        return "flow" if self.flow else str(scheduler.config.get("prediction_type", "epsilon"))

    # -- the text ---------------------------------------------------------------------------
    def prompt_tokens(self, pipe: Any, prompt: str, max_sequence_length: int | None) -> Any:
        """The :class:`~diffkit.reverse.text.PromptTokens` whose positions the attention maps index."""
        from .text import tokenize_prompt

        return tokenize_prompt(pipe, prompt)

    def call_options(
        self, pipe: Any, *, eta: float, guidance_rescale: float, true_cfg_scale: float, max_sequence_length: int | None
    ) -> dict[str, Any]:
        """The family's own keyword arguments of ``pipe(...)``, checked (each error names the fix)."""
        if true_cfg_scale != 1.0 or max_sequence_length is not None:
            raise InputError(
                _(
                    "true_cfg_scale and max_sequence_length apply to Flux pipelines, not {pipeline}; fix: leave them out"
                ).format(pipeline=type(pipe).__name__)
            )
        if self.denoiser == "unet":
            return dict(eta=eta, guidance_rescale=guidance_rescale)
        if eta or guidance_rescale:
            raise InputError(
                _(
                    "eta and guidance_rescale apply to SD and SDXL pipelines, not {pipeline}; fix: leave them at 0"
                ).format(pipeline=type(pipe).__name__)
            )
        return {}

    def does_cfg(self, work: Any, call_kwargs: dict[str, Any]) -> bool:
        """Whether the step runs an unconditional branch (read from the pipeline during its call)."""
        return bool(work.do_classifier_free_guidance)

    # -- what the denoiser's tensors are ------------------------------------------------------
    def token_grid(self, call_kwargs: dict[str, Any]) -> tuple[int, int] | None:
        """The grid of latent tokens, read from the denoiser call (Flux); None where latents are a grid."""
        return None

    def to_grid(self, x: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
        """A latent-shaped tensor as ``(B, C, h, w)`` (Flux unpacks its tokens; others are already)."""
        return x

    def split(self, outputs: list[torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(the unconditional output or None, the conditional one) from one step's denoiser outputs:
        SD's one call on the batch [uncond, text] (or on the text alone)."""
        out = outputs[-1]
        return out.chunk(2) if out.shape[0] == 2 else (None, out)

    def gates(self, call_index: int) -> bool:
        """Whether the denoiser call *call_index* (0-based within its step) starts a step."""
        return True

    def guidance(self, denoiser: Any, two_branches: bool) -> str:
        """What a step did (:data:`GUIDANCE_MODES`)."""
        return "cfg" if two_branches else "off"

    # -- attention ----------------------------------------------------------------------------
    def attention_layers(self, denoiser: Any) -> list[tuple[str, Any]]:
        from .attention import cross_attention_layers

        return cross_attention_layers(denoiser)

    def attention_store(
        self, n_tokens: int, latents: torch.Tensor, x_in: torch.Tensor, grid: tuple[int, int] | None
    ) -> Any:
        from .attention import CrossAttentionStore

        cond = slice(1, 2) if x_in.shape[0] == 2 else slice(0, 1)
        return CrossAttentionStore(n_tokens, tuple(latents.shape[-2:]), cond, dtype=torch.float16)

    def capture(self, denoiser: Any, store: Any, layers: Any, call_kwargs: dict[str, Any]) -> Any:
        from .attention import capture_cross_attention

        return capture_cross_attention(denoiser, store, layers)


@dataclass(frozen=True)
class FluxFamily(Family):
    """Flux (FLUX.1-dev, -schnell and their successors): what differs from SD 3.

    - Latents are packed: each 2×2 patch of latent pixels is one token ``(B, h/2 · w/2, 4C)``;
      the grid is read from the call's ``img_ids``, and every latent-shaped tensor is unpacked
      (:func:`diffkit.images.unpack_latents`) before it is recorded.
    - Guidance is distilled where the transformer has guidance embeddings: ``guidance_scale``
      enters as an embedding, one call per step. True CFG (``true_cfg_scale`` > 1 with a negative
      prompt) makes two calls per step, the prompt's first; they are split like SD's.
    - The text in the attention is T5's (``tokenizer_2``, ``max_sequence_length`` tokens).
    """

    def size_factor(self, work: Any) -> int:
        from ..images import vae_factor

        return vae_factor(work) * 2  # 2×2 packing

    def prompt_tokens(self, pipe: Any, prompt: str, max_sequence_length: int | None) -> Any:
        from .text import tokenize_prompt

        return tokenize_prompt(pipe.tokenizer_2, prompt, max_length=max_sequence_length or 512)

    def call_options(
        self, pipe: Any, *, eta: float, guidance_rescale: float, true_cfg_scale: float, max_sequence_length: int | None
    ) -> dict[str, Any]:
        if eta or guidance_rescale:
            raise InputError(
                _(
                    "eta and guidance_rescale apply to SD and SDXL pipelines, not {pipeline}; fix: leave them at 0"
                ).format(pipeline=type(pipe).__name__)
            )
        options: dict[str, Any] = dict(true_cfg_scale=true_cfg_scale)
        if max_sequence_length is not None:
            options["max_sequence_length"] = max_sequence_length
        return options

    def does_cfg(self, work: Any, call_kwargs: dict[str, Any]) -> bool:
        return call_kwargs.get("true_cfg_scale", 1.0) > 1 and call_kwargs.get("negative_prompt") is not None

    def token_grid(self, call_kwargs: dict[str, Any]) -> tuple[int, int] | None:
        ids = call_kwargs["img_ids"]  # (N, 3): (0, row, column) of each token
        ids = ids[0] if ids.ndim == 3 else ids
        rows, cols = ids[:, 1].max(), ids[:, 2].max()
        return int(rows) + 1, int(cols) + 1

    def to_grid(self, x: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
        from ..images import unpack_latents

        return unpack_latents(x, grid)

    def split(self, outputs: list[torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor]:
        """[the prompt's output] or [the prompt's, the negative prompt's] (true CFG)."""
        return (outputs[1], outputs[0]) if len(outputs) == 2 else (None, outputs[0])

    def gates(self, call_index: int) -> bool:
        return call_index == 0  # true CFG's second call belongs to the same step

    def guidance(self, denoiser: Any, two_branches: bool) -> str:
        embedded = bool(denoiser.config.get("guidance_embeds", False))
        if embedded:
            return "embedded+cfg" if two_branches else "embedded"
        return "cfg" if two_branches else "off"

    def attention_layers(self, denoiser: Any) -> list[tuple[str, Any]]:
        from .flux_attention import flux_attention_layers

        return flux_attention_layers(denoiser)

    def attention_store(
        self, n_tokens: int, latents: torch.Tensor, x_in: torch.Tensor, grid: tuple[int, int] | None
    ) -> Any:
        from .attention import CrossAttentionStore

        return CrossAttentionStore(n_tokens, grid, slice(0, 1), dtype=torch.float16)

    def capture(self, denoiser: Any, store: Any, layers: Any, call_kwargs: dict[str, Any]) -> Any:
        from .flux_attention import capture_flux_attention

        return capture_flux_attention(store, layers, text_len=int(call_kwargs["encoder_hidden_states"].shape[1]))


FAMILIES: tuple[Family, ...] = (
    Family("sd", "StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "unet", False),
    Family("sdxl", "StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "unet", False),
    Family("sd3", "StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline", "transformer", True),
    FluxFamily("flux", "FluxPipeline", "FluxImg2ImgPipeline", "transformer", True),
)
"""The supported pipeline families."""


def family_of(pipe: Any) -> tuple[Family, bool]:
    """(the :class:`Family` of *pipe*, whether *pipe* is an img2img pipeline)."""
    import diffusers

    for fam in FAMILIES:
        for name, img2img in ((fam.txt2img, False), (fam.img2img, True)):
            cls = getattr(diffusers, name, None)
            if cls is not None and isinstance(pipe, cls):
                return fam, img2img
    names = ", ".join(n for f in FAMILIES for n in (f.txt2img, f.img2img))
    raise InputError(
        _(
            "{pipeline} is not supported: ReverseChain records {names}; fix: load one with "
            "diffkit.load_pipeline (a Stable Diffusion 1.x/2.x, SDXL or SD 3 model, or 'tiny')"
        ).format(pipeline=type(pipe).__name__, names=names)
    )


def scheduler_for(pipe: Any, family: Family, scheduler: str | Any | None) -> Any:
    """A fresh scheduler for the chain: never the pipeline's own object, whose state ``set_timesteps`` changes."""
    import diffusers

    if scheduler is None:
        return type(pipe.scheduler).from_config(pipe.scheduler.config)
    if isinstance(scheduler, str):
        names = family.schedulers
        if scheduler not in names:
            raise InputError(
                _("unknown scheduler {scheduler!r} for {pipeline}; fix: choose one of {names}").format(
                    scheduler=scheduler, pipeline=type(pipe).__name__, names=sorted(names)
                )
            )
        return getattr(diffusers, names[scheduler]).from_config(pipe.scheduler.config)
    if hasattr(scheduler, "set_timesteps") and hasattr(scheduler, "config"):
        return type(scheduler).from_config(scheduler.config)
    raise InputError(
        _("scheduler must be a name or a diffusers scheduler, got {type}; fix: pass a name such as 'ddim'").format(
            type=type(scheduler).__name__
        )
    )


class _EmptyFp32Notice:
    """Drops diffusers' notice "modules … that should be kept in float32: []" when the list is empty.

    ``from_pipe`` casts the new pipeline with ``.to(dtype=…)``, and diffusers' ``ModelMixin.to``
    then warns about the modules that must stay in float32 even when there are none (the list
    printed is ``[]``): six lines in a student's output per img2img chain that say nothing. A
    notice naming real modules passes through. Installed once on diffusers' modeling logger (a
    filter, not a log level: every other message of that logger still shows).
    """

    def filter(self, record) -> bool:  # noqa: A003 (logging's name)
        return "should be kept in float32: []" not in record.getMessage()


def _install_fp32_notice_filter() -> None:
    import logging

    logger = logging.getLogger("diffusers.models.modeling_utils")
    if not any(isinstance(f, _EmptyFp32Notice) for f in logger.filters):
        logger.addFilter(_EmptyFp32Notice())


def working_pipeline(pipe: Any, family: Family, img2img: bool, scheduler: Any) -> Any:
    """A pipeline of the right class sharing *pipe*'s modules, with *scheduler* as its own.

    A shallow copy when *pipe* already has the class (no ``__init__``, so no config is
    rewritten); otherwise diffusers' public ``from_pipe``, given a throwaway scheduler so that
    its ``__init__`` rewrites nothing the user holds. Either way *scheduler* is then set as an
    attribute, untouched.
    """
    import diffusers

    cls = getattr(diffusers, family.img2img if img2img else family.txt2img)
    if isinstance(pipe, cls):
        work = copy.copy(pipe)
    else:
        _install_fp32_notice_filter()
        work = cls.from_pipe(pipe, scheduler=type(scheduler).from_config(scheduler.config))
    work.scheduler = scheduler
    work.set_progress_bar_config(disable=True)
    return work
