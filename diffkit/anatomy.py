"""The U-Net opened up: its blocks in the order they run, with the shapes read by hooks.

:func:`unet_anatomy` runs one real call of a pipeline's U-Net (the pipeline's own first
denoising step, without guidance, so batch 1) with forward hooks on its parts, and returns one
row per part: the down path, the middle, the up path with its skip connections, and where the
timestep and the text enter. Nothing is drawn by hand: a different model gives a different table.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
import torch

from .checks import check_seed
from .errors import InputError
from .images import vae_factor

__all__ = ["unet_anatomy"]

_PART = re.compile(
    r"^(time_embedding|add_embedding|conv_in|conv_out"
    r"|(down_blocks|up_blocks)\.\d+\.(resnets|attentions|downsamplers|upsamplers)\.\d+"
    r"|mid_block\.(resnets|attentions)\.\d+)$"
)


def _shape(x: Any) -> tuple[int, ...] | None:
    if isinstance(x, torch.Tensor):
        return tuple(x.shape)
    if hasattr(x, "sample"):
        return _shape(x.sample)
    if isinstance(x, (tuple, list)) and x:
        return _shape(x[0])
    return None


def _stage(name: str) -> str:
    m = re.match(r"(down|up)_blocks\.(\d+)", name)
    if m:
        return f"{m.group(1)} {int(m.group(2)) + 1}"
    if name.startswith("mid_block"):
        return "middle"
    return {"conv_in": "in", "conv_out": "out"}.get(name, "conditioning")


_ADDED = {
    "text": "the text, attention-pooled, added to the time embedding (a global text path beside cross-attention)",
    "text_time": "the pooled text and the image size and crop, added to the time embedding (SDXL)",
    "text_image": "the text and an image embedding, added to the time embedding",
}


def _kind(name: str, module: Any, config: Any) -> str:
    if name == "time_embedding":
        return "time embedding (an MLP of the timestep's sinusoidal features)"
    if name == "add_embedding":
        kind = config.get("addition_embed_type")
        return _ADDED.get(kind, f"{kind} conditioning added to the time embedding")
    if name in ("conv_in", "conv_out"):
        return "convolution"
    part = name.split(".")[-2]
    if part == "resnets":
        return "ResNet block"
    if part == "downsamplers":
        return "downsample (stride-2 convolution)"
    if part == "upsamplers":
        return "upsample (nearest ×2, convolution)"
    block = module.transformer_blocks[0]
    if getattr(block, "only_cross_attention", False):
        return "transformer: cross-attention to the text (no self-attention)"
    if getattr(block, "attn2", None) is not None:
        return "transformer: self-attention, then cross-attention to the text"
    return "transformer: self-attention only"


def unet_anatomy(
    pipe: Any, prompt: str = "a red circle", *, height: int | None = None, width: int | None = None, seed: int = 0
) -> pd.DataFrame:
    """One row per part of *pipe*'s U-Net, in the order one call runs them.

    Parameters
    ----------
    pipe
        A diffusers pipeline whose denoiser is a ``UNet2DConditionModel`` (SD 1.x/2.x, SDXL,
        diffkit-tiny). SD 3 and Flux denoise with a transformer and are refused.
    prompt
        The text of the call (its shape, not its words, decides the table).
    height, width
        Image size in pixels (default the model's own).
    seed
        Seed of the call's starting noise.

    Returns
    -------
    pandas.DataFrame
        Columns ``order`` (the call order), ``part`` (the module's name in the U-Net),
        ``stage`` (``conditioning``, ``in``, ``down 1`` …, ``middle``, ``up 1`` …, ``out``),
        ``kind``, ``input`` and ``output`` (tensor shapes), ``resolution`` (the feature map's
        height × width), ``channels`` (output channels), ``enters`` (what else comes in:
        the time embedding of a ResNet, the text a transformer attends to, the skip connection
        an up-path ResNet concatenates) and ``skip_from`` (the down-path part whose saved
        output that skip carries; empty elsewhere). ``df.attrs`` holds ``timestep`` and
        ``text`` (the text embedding's shape) and ``time_embedding`` (its shape).
    """
    unet = getattr(pipe, "unet", None)
    if unet is None or not hasattr(unet, "down_blocks"):
        what = type(getattr(pipe, "transformer", pipe)).__name__
        raise InputError(
            f"unet_anatomy reads U-Nets (SD 1.x/2.x, SDXL, diffkit-tiny); this pipeline's denoiser is "
            f"{what}. Fix: pass a Stable Diffusion 1.x/2.x or SDXL pipeline"
        )
    rows, meta = _one_call(pipe, unet, prompt, height, width, seed)
    df = pd.DataFrame(rows)
    df.insert(0, "order", range(len(df)))
    df["resolution"] = [f"{o[-2]}×{o[-1]}" if o and len(o) == 4 else "" for o in df["output"]]
    df["channels"] = [o[1] if o and len(o) == 4 else (o[-1] if o else None) for o in df["output"]]
    _skip_connections(df)
    temb = df.loc[df.part == "time_embedding", "output"]
    df.attrs.update(meta, time_embedding=temb.iloc[0] if len(temb) else None)
    return df[["order", "part", "stage", "kind", "input", "output", "resolution", "channels", "enters", "skip_from"]]


def _part_row(name: str, module: Any, config: Any, args: tuple, kwargs: dict, out: Any, meta: dict) -> dict[str, Any]:
    """What one part did in the call: its shapes and what else entered it."""
    x = args[0] if args else kwargs.get("hidden_states", kwargs.get("sample"))
    row = {
        "part": name,
        "stage": _stage(name),
        "kind": _kind(name, module, config),
        "input": _shape(x),
        "output": _shape(out),
    }
    if ".resnets." in name:
        temb = args[1] if len(args) > 1 else kwargs.get("temb")
        how = "scale and shift" if getattr(module, "time_embedding_norm", "") == "scale_shift" else "added"
        row["enters"] = f"time embedding {_shape(temb)} ({how})" if temb is not None else ""
    elif ".attentions." in name:
        text = kwargs.get("encoder_hidden_states")
        row["enters"] = f"text {_shape(text)} as keys and values" if text is not None else ""
    elif name == "time_embedding":
        row["enters"] = f"the timestep t = {meta['timestep']:g}"
    elif name == "add_embedding":
        row["enters"] = f"{_shape(x)}"
    else:
        row["enters"] = ""
    return row


def _one_call(
    pipe: Any, unet: Any, prompt: str, height: int | None, width: int | None, seed: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run one denoising step of *pipe* with hooks on the U-Net's parts: (a row per part, in call order; the call's timestep and text shape)."""
    rows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}

    def hook(name: str, module: Any):
        def fn(mod: Any, args: tuple, kwargs: dict, out: Any) -> None:
            if not (rows and rows[-1]["part"] == "conv_out"):  # later calls (a second step) are not recorded
                rows.append(_part_row(name, mod, unet.config, args, kwargs, out, meta))

        return fn

    def unet_pre(mod: Any, args: tuple, kwargs: dict) -> None:
        if "timestep" not in meta:
            t = args[1] if len(args) > 1 else kwargs.get("timestep")
            text = args[2] if len(args) > 2 else kwargs.get("encoder_hidden_states")
            meta["timestep"] = float(torch.as_tensor(t).flatten()[0])
            meta["text"] = _shape(text)

    handles = [
        module.register_forward_hook(hook(name, module), with_kwargs=True)
        for name, module in unet.named_modules()
        if _PART.match(name)
    ]
    handles.append(unet.register_forward_pre_hook(unet_pre, with_kwargs=True))
    size = int(unet.config.sample_size) * vae_factor(pipe)
    try:
        with torch.no_grad():
            pipe(
                prompt,
                num_inference_steps=1,
                guidance_scale=1.0,  # no unconditional half: batch 1
                height=height or size,
                width=width or size,
                generator=torch.Generator().manual_seed(check_seed(seed)),
                output_type="latent",
            )
    finally:
        for h in handles:
            h.remove()
    return rows, meta


def _skip_connections(df: pd.DataFrame) -> None:
    """Fill ``skip_from`` and say in ``enters`` which saved output each up-path ResNet concatenates."""
    # as the U-Net keeps them: conv_in and every down-path layer (a ResNet,
    # or its transformer when it has one) and downsampler push their output; each up-path
    # ResNet pops the last one and concatenates it
    df["skip_from"] = ""
    saved: list[tuple[str, int]] = []
    parts = set(df.part)
    for i, r in df.iterrows():
        part = r["part"]
        if part == "conv_in" or (
            r["stage"].startswith("down")
            and (
                ".downsamplers." in part
                or ".attentions." in part
                or (".resnets." in part and part.replace("resnets", "attentions") not in parts)
            )
        ):
            saved.append((part, int(r["channels"])))
        elif r["stage"].startswith("up") and ".resnets." in part and saved:
            source, channels = saved.pop()
            sep = "; " if r["enters"] else ""
            df.at[i, "skip_from"] = source
            df.at[i, "enters"] = (
                f"skip connection from the down path: {channels} channels concatenated{sep}{r['enters']}"
            )
