"""diffkit-tiny: an embedded, genuinely trained text-to-image pipeline and CLIP judge.

Both are trained by recipes in this package (:mod:`diffkit.tiny.train`) on the pictogram
world (:mod:`diffkit.tiny.world`), whose truth the pixel oracle (:mod:`diffkit.tiny.oracle`)
reads back from any image. The weights ship as package data under ``weights/``:

* ``weights/pipeline/``: an ordinary diffusers ``StableDiffusionPipeline`` folder;
* ``weights/clip/``: an open_clip config (``diffkit-tiny-clip.json``) and its weights.

Prompts with words outside the world still run: the model does what it can, which is
usually a pictogram or a shape of the nearest kind. See ``MODEL_CARD.md``.

Examples
--------
>>> from diffkit import tiny
>>> tiny.pipeline_path().name
'pipeline'
"""

from __future__ import annotations

from pathlib import Path

from ..errors import WeightsMissingError

__all__ = ["REBUILD_COMMAND", "WEIGHTS_DIR", "clip_path", "load_clip", "pipeline_path", "training_loss"]

WEIGHTS_DIR = Path(__file__).with_name("weights")
REBUILD_COMMAND = "python -m diffkit.tiny.train --resume"  # diffkit-tiny 2's recipe, every stage

_PIPELINE_FILES = (
    "model_index.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/tokenizer_config.json",
    "scheduler/scheduler_config.json",
)


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as e:
        raise WeightsMissingError(
            f"{path} is corrupt ({e}); fix: reinstall diffkit, or rebuild the diffkit-tiny weights with `{REBUILD_COMMAND}`"
        ) from e


def pipeline_path(*, verify: bool = True) -> Path:
    """The folder of the shipped diffkit-tiny ``StableDiffusionPipeline``.

    Raises :class:`~diffkit.errors.WeightsMissingError` (a ``FileNotFoundError``) naming a
    missing or (with *verify*) corrupt weight file and the rebuild command.
    """
    folder = WEIGHTS_DIR / "pipeline"
    for rel in _PIPELINE_FILES:
        if not (folder / rel).is_file():
            raise WeightsMissingError(
                f"{folder / rel} is missing; fix: reinstall diffkit, or rebuild the diffkit-tiny weights with `{REBUILD_COMMAND}`"
            )
    if verify:
        for rel in _PIPELINE_FILES:
            if rel.endswith(".safetensors"):
                _check_safetensors(folder / rel)
    return folder


def clip_path(*, verify: bool = True, weak: bool = False) -> Path:
    """The shipped weights of the diffkit-tiny CLIP judge (``open_clip_model.safetensors``); with
    *weak*, of the deliberately weaker judge (``weights/clip-weak/``, see the model card)."""
    folder = WEIGHTS_DIR / ("clip-weak" if weak else "clip")
    config = "diffkit-tiny-clip-weak.json" if weak else "diffkit-tiny-clip.json"
    for name in (config, "open_clip_model.safetensors"):
        if not (folder / name).is_file():
            raise WeightsMissingError(
                f"{folder / name} is missing; fix: reinstall diffkit, or rebuild the diffkit-tiny weights with `{REBUILD_COMMAND}`"
            )
    weights = folder / "open_clip_model.safetensors"
    if verify:
        _check_safetensors(weights)
    return weights


def load_clip(*, weak: bool = False):
    """``(model, preprocess, tokenizer)`` of the diffkit-tiny CLIP judge, through open_clip's API.

    The model is float32 in eval mode; ``preprocess`` is open_clip's own transform (feed it
    PIL images, uint8); ``tokenizer`` is ``open_clip.get_tokenizer("diffkit-tiny-clip")``. With
    *weak*, the deliberately weaker judge (a spec's ``classifier.model = "tiny-weak"``).
    """
    from diffkit.tiny import clip as _clip

    return _clip.load(clip_path(weak=weak).parent)


def training_loss():
    """The shipped U-Net's training loss as its run logged it: a ``pandas.DataFrame`` with
    ``stage`` (``"unet"``, then ``"polish"``), ``step`` (within the stage), ``loss`` (the stage's
    weighted objective, exponential moving average 0.98, every 25 steps) and, for the polish
    stage, ``token_loss`` and ``low_noise_gap`` (its two added terms, unweighted).

    The objectives differ between the stages (the polish stage adds its terms and samples more
    low-noise steps), so compare within a stage. See ``MODEL_CARD.md``.
    """
    import pandas as pd

    path = WEIGHTS_DIR / "training_loss.csv"
    if not path.is_file():
        raise WeightsMissingError(
            f"{path} is missing; fix: reinstall diffkit, or rebuild the diffkit-tiny weights with `{REBUILD_COMMAND}`"
        )
    return pd.read_csv(path)
