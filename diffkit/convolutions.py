"""PyTorch's own CPU convolutions for small U-Nets, per module and without process-wide state.

At diffkit-tiny's size oneDNN's fixed cost per call dominates; :func:`native_cpu_convolutions`
makes each ``Conv2d`` of a small U-Net call ``torch.ops.aten.thnn_conv2d`` itself on small CPU
batches (:func:`diffkit.load_pipeline` applies it). Measured in ``benchmarks/bench_cpu_convolutions.py``.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = [
    "NATIVE_CONV_MAX_BATCH",
    "NATIVE_CONV_MAX_CHANNELS",
    "NativeConv2d",
    "is_small_unet",
    "native_cpu_convolutions",
    "plain_conv2d",
]


NATIVE_CONV_MAX_CHANNELS = 256
"""On the CPU, a U-Net whose widest block has at most this many channels runs its convolutions
with PyTorch's own kernel instead of oneDNN on small batches (see :func:`native_cpu_convolutions`).
One U-Net call, batch 2, 2 threads, this repository's 2-core Xeon, PyTorch's native convolutions
against oneDNN's: 32–128 channels at 16² 0.78×, 64–256 at 16² 0.90×, 128–512 at 32² 1.06×, SD 1.5's
320–1,280 at 64² 1.06× (``python benchmarks/bench_cpu_convolutions.py``, 2026-11-27)."""

NATIVE_CONV_MAX_BATCH = 4
"""...and only on float32 calls whose batch has at most this many samples (one or two images
with guidance). diffkit-tiny 2's U-Net, native / oneDNN, same run: batch 2 0.79×, 4 0.94×,
8 1.10×, 16 2.59×, 32 2.03×: oneDNN's fixed cost is paid once per call, and large batches
repay it."""


def is_small_unet(pipe: Any) -> bool:
    unet = getattr(pipe, "unet", None)
    channels = getattr(getattr(unet, "config", None), "block_out_channels", None)
    return bool(channels) and max(channels) <= NATIVE_CONV_MAX_CHANNELS


def plain_conv2d(module: Any) -> bool:
    """A ``torch.nn.Conv2d`` whose forward is the stock one, with what ``aten::thnn_conv2d`` takes."""
    return (
        isinstance(module, torch.nn.Conv2d)
        and type(module).forward is torch.nn.Conv2d.forward
        and module.groups == 1
        and tuple(module.dilation) == (1, 1)
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


class NativeConv2d:
    """A ``Conv2d``'s forward that calls PyTorch's own CPU convolution on small float32 batches.

    ``aten::thnn_conv2d`` is the kernel ``F.conv2d`` itself dispatches to on the CPU when oneDNN
    is switched off (the "slow 2d" backend); calling it directly gives the same numbers bit for
    bit (``tests/test_pipeline.py`` asserts it) without touching the process-wide
    ``torch.backends.mkldnn.enabled``, so another thread's convolutions, an audit's batch of 16
    say, never change. Every other call (a larger batch, float16/bfloat16, another device,
    channels-last memory) runs the module's own forward, oneDNN included. A class, not a
    closure, so that ``copy.deepcopy`` binds the copy's own weights.
    """

    def __init__(self, conv: torch.nn.Conv2d) -> None:
        self.conv = conv

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        w = c.weight
        if (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and w.dtype == torch.float32
            and x.dim() == 4
            and x.shape[0] <= NATIVE_CONV_MAX_BATCH
            and x.is_contiguous()
        ):
            # (B, C_in, H, W) ⊛ (C_out, C_in, k, k) → (B, C_out, H', W'), zero padding
            return torch.ops.aten.thnn_conv2d(x, w.contiguous(), c.kernel_size, c.bias, c.stride, c.padding)
        return torch.nn.Conv2d.forward(c, x)


def native_cpu_convolutions(pipe: Any) -> Any:
    """Run the pipeline's U-Net convolutions with PyTorch's own CPU kernel on small batches.

    oneDNN (PyTorch's default CPU convolution) pays a fixed cost per call that dominates at
    diffkit-tiny's size and one image at a time: one 25-step image with guidance took 0.80 of
    plain diffusers' time with native convolutions in the same run on this repository's 2-core
    machine. Calls on more than :data:`NATIVE_CONV_MAX_BATCH` samples keep oneDNN, which is up
    to 2.6× faster there, as do float16 and bfloat16 calls and calls on another device.

    Each of the U-Net's ``Conv2d`` modules gets a forward that calls the native kernel itself
    (:class:`NativeConv2d`); no process-wide flag is touched, so chains in several threads and
    an audit beside them each compute exactly what they would alone. :func:`load_pipeline`
    applies it on the CPU to U-Nets no wider than :data:`NATIVE_CONV_MAX_CHANNELS`; images
    agree with oneDNN's to 2e-5. The VAE keeps oneDNN (its decode took 23 ms with it, 34 ms
    without). Returns ``pipe``; calling it twice is harmless.
    """
    unet = getattr(pipe, "unet", None)
    if unet is None:
        return pipe
    for module in unet.modules():
        if plain_conv2d(module) and not isinstance(module.__dict__.get("forward"), NativeConv2d):
            module.forward = NativeConv2d(module)
    return pipe
