"""Loading Stable Diffusion pipelines: hub ids, local folders and the embedded ``"tiny"``.

One code path for all three: ``diffusers.DiffusionPipeline.from_pretrained`` with
safetensors only. Hub ids are looked up in the Hugging Face cache first and fetched only
when the hub is reachable; a clear error names the fix otherwise.
"""

from __future__ import annotations

import numbers
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from .convolutions import NATIVE_CONV_MAX_BATCH, NATIVE_CONV_MAX_CHANNELS, is_small_unet, native_cpu_convolutions
from .errors import DiffkitError, GatedModelError, InputError, ModelUnavailableError
from .i18n import gettext as _

__all__ = [
    "GATED_MODELS",
    "SCHEDULERS",
    "GatedPipelineError",
    "PickledWeightsError",
    "PipelineNotAvailableError",
    "default_device_and_dtype",
    "load_pipeline",
    "NATIVE_CONV_MAX_BATCH",
    "NATIVE_CONV_MAX_CHANNELS",
    "check_steps",
    "make_scheduler",
    "native_cpu_convolutions",
    "scheduler_name",
]

SCHEDULERS: dict[str, str] = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_ancestral": "EulerAncestralDiscreteScheduler",
    "dpm_solver": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "heun": "HeunDiscreteScheduler",
}
"""Short scheduler names and the diffusers classes they stand for."""

_PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")


class PipelineNotAvailableError(ModelUnavailableError):
    """The weights are neither in a local folder, nor cached, nor reachable."""


class GatedPipelineError(PipelineNotAvailableError, GatedModelError):
    """A gated pipeline on the hub (FLUX.1-dev, SD 3): accept its licence, log in, download."""


GATED_MODELS: tuple[str, ...] = (
    "black-forest-labs/FLUX.1-dev",
    "black-forest-labs/FLUX.1-Kontext-dev",
    "black-forest-labs/FLUX.1-Krea-dev",
    "black-forest-labs/FLUX.1-Fill-dev",
    "stabilityai/stable-diffusion-3-medium-diffusers",
    "stabilityai/stable-diffusion-3.5-medium",
    "stabilityai/stable-diffusion-3.5-large",
)
"""Hub pipelines whose files are gated behind a licence accepted on their hub page (as of 2026)."""


class PickledWeightsError(DiffkitError, ValueError):
    """The pipeline ships only pickled weights, which diffkit refuses to load."""


def default_device_and_dtype(
    device: str | torch.device | None = None, dtype: torch.dtype | str | None = None
) -> tuple[torch.device, torch.dtype]:
    """CUDA with float16 when a GPU is there, else Apple MPS with float16, else CPU with float32."""
    if device is None:
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(
            _("unknown device {device!r}; fix: use 'cpu', 'cuda', 'cuda:0' or 'mps'").format(device=device)
        ) from None
    if isinstance(dtype, str):
        try:
            dtype = {
                "float32": torch.float32,
                "fp32": torch.float32,
                "float16": torch.float16,
                "fp16": torch.float16,
                "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16,
            }[dtype]
        except KeyError:
            raise InputError(
                _("unknown dtype {dtype!r}; fix: use 'float32', 'float16' or 'bfloat16'").format(dtype=dtype)
            ) from None
    if dtype is not None and dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise InputError(
            _("dtype {dtype!r} cannot run a pipeline; fix: use 'float32', 'float16' or 'bfloat16'").format(dtype=dtype)
        )
    if dtype is None:
        dtype = torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if device.type == "cpu" and dtype == torch.float16:
        warnings.warn(_("float16 on the CPU is slow and lossy; float32 is the usual choice there"), stacklevel=3)
    return device, dtype


def scheduler_name(scheduler: Any) -> str:
    """The short name of a scheduler instance or class (``"ddim"``), or its class name."""
    cls = scheduler if isinstance(scheduler, type) else type(scheduler)
    for short, name in SCHEDULERS.items():
        if cls.__name__ == name:
            return short
    return cls.__name__


def make_scheduler(name: str, config: Any) -> Any:
    """A scheduler called *name* (see :data:`SCHEDULERS`, or a diffusers class name) built from
    another scheduler's *config*, the way diffusers swaps schedulers (``from_config``)."""
    import diffusers

    cls_name = SCHEDULERS.get(name, name)
    if cls_name not in SCHEDULERS.values():
        raise InputError(
            _("unknown scheduler {name!r}; fix: choose one of {names}").format(name=name, names=sorted(SCHEDULERS))
        )
    return getattr(diffusers, cls_name).from_config(config)


def check_steps(scheduler: Any, steps: Any, *, name: str = "steps") -> int:
    """*steps* as an int a sampler can take: a whole number from 1 to the scheduler's
    ``num_train_timesteps`` (the forward chain's length, 1,000 for SD).

    Past that length there is no new timestep to visit: DDIM and DDPM refuse it, PNDM would run
    every U-Net call at t = 1, DPM-Solver and UniPC repeat timesteps. *scheduler* is an instance,
    a class or a config; *name* is how the error names the setting (``"pipeline.steps"``).
    """
    from .checks import check_int
    from .i18n import N_

    config = getattr(scheduler, "config", scheduler)
    T = int(config.get("num_train_timesteps", 1000)) if hasattr(config, "get") else 1000
    if isinstance(steps, numbers.Integral) and not isinstance(steps, bool) and steps > T:
        cls = scheduler.__name__ if isinstance(scheduler, type) else type(scheduler).__name__
        raise InputError(
            _(
                "{name}={steps} is more than the {T} timesteps the model's forward chain has "
                "({cls}: past them there is no new timestep to visit); fix: use at most {T} steps (25–50 is usual)"
            ).format(name=name, steps=steps, T=T, cls=cls)
        )
    return check_int(name, steps, lo=1, hi=T, hint=N_("25–50 is usual"))


def _check_local_folder(path: Path) -> None:
    if not (path / "model_index.json").is_file():
        raise PipelineNotAvailableError(
            _(
                "{path} is not a diffusers pipeline folder (no model_index.json); fix: save one with "
                "pipe.save_pretrained(folder), or pass a Hugging Face hub id"
            ).format(path=path)
        )
    pickled = []
    for folder in [path, *(p for p in path.iterdir() if p.is_dir())]:
        files = [p for p in folder.iterdir() if p.is_file()]
        if not any(p.suffix == ".safetensors" for p in files):
            pickled += [str(p.relative_to(path)) for p in files if p.suffix in _PICKLE_SUFFIXES]
    if pickled:
        raise PickledWeightsError(
            _(
                "{path} holds pickled weights with no safetensors beside them ({files}); pickles can run code, so "
                "diffkit loads safetensors only. Convert them once: "
                "fix: DiffusionPipeline.from_pretrained(folder, use_safetensors=False).save_pretrained(new_folder, "
                "safe_serialization=True)"
            ).format(path=path, files=", ".join(sorted(pickled)[:4]))
        )


def _resolve(name_or_path: str | os.PathLike) -> tuple[str, bool]:
    """(what to pass to from_pretrained, whether it is a local folder)."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise InputError(
            _(
                "name_or_path={name!r} is not a model name; fix: pass 'tiny', a hub id such as "
                "'stable-diffusion-v1-5/stable-diffusion-v1-5', or a folder saved with save_pretrained"
            ).format(name=name_or_path)
        )
    if str(name_or_path) == "tiny":
        try:
            from .tiny import pipeline_path
        except ImportError as e:  # pragma: no cover - tiny is part of the package
            raise PipelineNotAvailableError(f"the embedded diffkit-tiny model is not available: {e}") from e
        return str(pipeline_path()), True
    p = Path(name_or_path).expanduser()
    if p.exists():
        return str(p), True
    s = str(name_or_path)
    if s.startswith((".", "/", "~")) or s.count("/") > 1 or os.sep in s and os.sep != "/":
        raise PipelineNotAvailableError(
            _("no such folder: {path}; fix: check the path, or pass a hub id such as 'org/name' or 'tiny'").format(
                path=p
            )
        )
    return s, False


def load_pipeline(
    name_or_path: str | os.PathLike = "tiny",
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    scheduler: str | None = None,
    revision: str | None = None,
    variant: str | None = None,
    local_files_only: bool | None = None,
    **kwargs: Any,
) -> Any:
    """Load a Stable Diffusion pipeline from a hub id, a local folder, or ``"tiny"``.

    Parameters
    ----------
    name_or_path
        ``"tiny"`` (diffkit's embedded model, offline), a Hugging Face hub id such as
        ``"stable-diffusion-v1-5/stable-diffusion-v1-5"``, or a folder written by ``save_pretrained``.
    device, dtype
        Default: CUDA with float16 when available, else CPU with float32. On the CPU a small
        U-Net (diffkit-tiny's size) runs its convolutions on one or two images with PyTorch's
        own kernel instead of oneDNN, which is faster there (:func:`native_cpu_convolutions`;
        no process-wide setting is changed).
    scheduler
        Swap the pipeline's scheduler for another by short name (see :data:`SCHEDULERS`).
    revision, variant
        Passed to ``from_pretrained`` (e.g. ``variant="fp16"``).
    local_files_only
        Never touch the network. Default: true when ``HF_HUB_OFFLINE`` is set.
    **kwargs
        Passed to ``DiffusionPipeline.from_pretrained``.

    Raises
    ------
    PickledWeightsError
        The pipeline ships pickled weights only (diffkit loads safetensors only).
    PipelineNotAvailableError
        The weights are neither cached nor reachable; the message names the fix.
    """
    from diffusers import DiffusionPipeline

    if "use_safetensors" in kwargs and not kwargs.pop("use_safetensors"):
        raise PickledWeightsError(
            _(
                "diffkit loads safetensors only; use_safetensors=False is refused; fix: leave "
                "use_safetensors out (a repository without safetensors: convert it once)"
            )
        )
    device, dtype = default_device_and_dtype(device, dtype)
    source, is_local = _resolve(name_or_path)
    if local_files_only is None:
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if is_local:
        _check_local_folder(Path(source))
    try:
        pipe = DiffusionPipeline.from_pretrained(
            source,
            dtype=dtype,
            use_safetensors=True,
            revision=revision,
            variant=variant,
            local_files_only=local_files_only or is_local,
            **kwargs,
        )
    except (AttributeError, KeyError, TypeError, ValueError, OSError) as e:
        err = _load_error(
            e, name_or_path, source, is_local=is_local, local_files_only=local_files_only, revision=revision
        )
        if err is e:
            raise
        raise err from e
    if scheduler is not None:
        pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    if torch.device(device).type == "cpu" and is_small_unet(pipe):
        native_cpu_convolutions(pipe)
    return pipe


def _load_error(
    e: Exception, name_or_path: Any, source: str, *, is_local: bool, local_files_only: bool, revision: str | None
) -> BaseException:
    """diffkit's error for what ``from_pretrained`` raised (or *e* itself, when it is no loading failure)."""
    if not isinstance(e, OSError):
        if not is_local:
            return e
        return PipelineNotAvailableError(
            _(
                "{source} is not a usable diffusers pipeline folder ({error}); fix: check model_index.json "
                "(its _class_name and components), or save the pipeline again with pipe.save_pretrained(folder)"
            ).format(source=source, error=_one_line(e))
        )
    msg = str(e).lower()
    if "safetensors" in msg and ("not found" in msg or "could not find" in msg):
        return PickledWeightsError(
            _(
                "{name!r} has no safetensors weights; diffkit refuses pickled weights. "
                "fix: pick a repository or revision that ships .safetensors files"
            ).format(name=name_or_path)
        )
    if is_local:
        return PipelineNotAvailableError(
            _(
                "{source} is not a usable diffusers pipeline folder ({error}); fix: save the pipeline "
                "again with pipe.save_pretrained(folder), or pass a hub id"
            ).format(source=source, error=_one_line(e))
        )
    hint = (
        _("the hub is unreachable or offline mode is on")
        if local_files_only
        else _("it could not be fetched from the Hugging Face hub")
    )
    gated = str(name_or_path) in GATED_MODELS or "gated" in msg or "401" in msg or "403" in msg
    if gated:
        return GatedPipelineError(
            _(
                "could not load {name!r}: it is a gated model on the Hugging Face hub, not in the "
                "cache ({cache}), and {hint}; fix: on a machine with network, open "
                "https://huggingface.co/{id}, log in and accept its licence, then `hf auth login` with a "
                "read token and `hf download {id}` to fill the cache (or pass a local folder saved with "
                "save_pretrained); FLUX.1-schnell (Apache-2.0) is not gated, and "
                "diffkit.testing.tiny_random_pipeline('flux') runs offline"
            ).format(name=str(name_or_path), cache=_hf_cache(), hint=hint, id=name_or_path)
        )
    return PipelineNotAvailableError(
        _(
            "could not load {name!r}: it is not in the Hugging Face cache "
            "({cache}) and {hint}; fix: on a machine with network run "
            "`hf download {id}{revision}` (the command of "
            "huggingface_hub; in Python: huggingface_hub.snapshot_download({name!r})) "
            "to fill the cache, or pass a local folder saved with save_pretrained; "
            "load_pipeline('tiny') always works offline"
        ).format(
            name=str(name_or_path),
            cache=_hf_cache(),
            hint=hint,
            id=name_or_path,
            revision=f" --revision {revision}" if revision else "",
        )
    )


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__


def _hf_cache() -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except Exception:  # pragma: no cover
        return "~/.cache/huggingface/hub"
