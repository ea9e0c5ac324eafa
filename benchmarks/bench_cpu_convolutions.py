"""oneDNN against PyTorch's native CPU convolutions, by U-Net size (issue 11's speed bar).

    python benchmarks/bench_cpu_convolutions.py [--threads 2] [--skip-sd]

:func:`diffkit.load_pipeline` runs a small U-Net's convolutions without oneDNN on the CPU
(:func:`diffkit.pipeline.native_cpu_convolutions`, U-Nets no wider than
:data:`diffkit.pipeline.NATIVE_CONV_MAX_CHANNELS`, calls on one or two images with guidance). This prints the evidence for that rule
on this machine, each figure a ratio against the other backend measured in the same run,
interleaved:

* one U-Net call (batch 2, as with guidance) for four widths: diffkit-tiny 2's (32–128
  channels at 16²), two between, and SD 1.5's (320–1,280 at 64², random weights; the slowest,
  ``--skip-sd`` leaves it out);
* diffkit-tiny 2's U-Net at batches 2 to 32 (where oneDNN's fixed cost is repaid, which sets
  :data:`diffkit.pipeline.NATIVE_CONV_MAX_BATCH`);
* one diffkit-tiny image and a batch of 16, 25 PNDM steps with guidance 7.5, as
  ``load_pipeline("tiny")`` gives them against the same folder loaded by plain diffusers
  (oneDNN throughout), with the largest pixel difference between the two.
"""

from __future__ import annotations

import argparse
import os
import time


def _unet(channels, latent, cross_dim, heads, layers):
    from diffusers import UNet2DConditionModel

    n = len(channels)
    return UNet2DConditionModel(
        sample_size=latent,
        block_out_channels=channels,
        layers_per_block=layers,
        down_block_types=["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"],
        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1),
        cross_attention_dim=cross_dim,
        attention_head_dim=heads,
        norm_num_groups=min(32, channels[0] // 4),
    ).eval()


def _onednn_and_native(unet, batch: int, latent: int, cross_dim: int, reps: int, rounds: int):
    """Best seconds of one U-Net call with oneDNN and with native convolutions, interleaved."""
    import torch

    x, e, t = torch.randn(batch, 4, latent, latent), torch.randn(batch, 77, cross_dim), torch.tensor(500)
    times = {True: [], False: []}
    with torch.inference_mode():
        for _ in range(rounds):
            for onednn in (True, False):
                with torch.backends.mkldnn.flags(enabled=onednn):
                    unet(x, t, encoder_hidden_states=e)  # warm-up (oneDNN caches primitives)
                    for _ in range(reps):
                        t0 = time.perf_counter()
                        unet(x, t, encoder_hidden_states=e)
                        times[onednn].append(time.perf_counter() - t0)
    return min(times[True]), min(times[False])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=int(os.environ.get("DIFFKIT_THREADS", "2")))
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per figure")
    p.add_argument("--skip-sd", action="store_true", help="leave out SD 1.5's width (~10 s a call)")
    args = p.parse_args()

    import torch
    from diffusers import StableDiffusionPipeline

    import diffkit
    from diffkit import tiny
    from diffkit.pipeline import NATIVE_CONV_MAX_BATCH, NATIVE_CONV_MAX_CHANNELS

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"threads {args.threads}; load_pipeline's rule: native when the widest block ≤ "
        f"{NATIVE_CONV_MAX_CHANNELS} channels and the call's batch ≤ {NATIVE_CONV_MAX_BATCH}"
    )
    cases = [
        ("diffkit-tiny 2", (32, 64, 128), 16, 64, 4, 1, 20),
        ("2× wider", (64, 128, 256), 16, 64, 4, 1, 10),
        ("4× wider, 32²", (128, 256, 512), 32, 256, 8, 1, 3),
    ]
    if not args.skip_sd:
        cases.append(("SD 1.5", (320, 640, 1280, 1280), 64, 768, 8, 2, 1))
    for name, ch, lat, cross, heads, layers, reps in cases:
        unet = _unet(ch, lat, cross, heads, layers)
        one, nat = _onednn_and_native(unet, 2, lat, cross, reps, max(2, args.rounds // reps))
        print(
            f"U-Net {name:15s} {str(ch):22s} at {lat:2d}²: oneDNN {one * 1e3:8.1f} ms, "
            f"native {nat * 1e3:8.1f} ms, native / oneDNN {nat / one:.2f}"
        )

    unet = StableDiffusionPipeline.from_pretrained(tiny.pipeline_path()).unet.eval()
    for batch in (2, 4, 8, 16, 32):
        one, nat = _onednn_and_native(unet, batch, 16, 64, max(2, 40 // batch), 3)
        rule = "native" if batch <= NATIVE_CONV_MAX_BATCH else "oneDNN"
        print(
            f"diffkit-tiny 2's U-Net, batch {batch:2d}: oneDNN {one * 1e3:6.1f} ms, native "
            f"{nat * 1e3:6.1f} ms, native / oneDNN {nat / one:.2f} (load_pipeline uses {rule})"
        )

    kw = dict(num_inference_steps=25, guidance_scale=7.5, output_type="np")
    pipes = {
        "load_pipeline('tiny')": diffkit.load_pipeline("tiny", device="cpu"),
        "plain diffusers": StableDiffusionPipeline.from_pretrained(tiny.pipeline_path()),
    }
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    for n, rounds in ((1, args.rounds), (16, 3)):
        prompts = ["a red circle"] * n
        images, times = {}, {k: [] for k in pipes}
        for pipe in pipes.values():
            pipe(prompts, **kw)  # warm-up
        for _ in range(rounds):
            for k, pipe in pipes.items():
                t0 = time.perf_counter()
                images[k] = pipe(prompts, generator=torch.Generator().manual_seed(0), **kw).images
                times[k].append(time.perf_counter() - t0)
        for k, ts in times.items():
            print(
                f"{n:2d} diffkit-tiny image(s), 25 steps, guidance 7.5, {k:22s}: best {min(ts):.3f} s, "
                f"median {sorted(ts)[len(ts) // 2]:.3f} s"
            )
        a, b = (min(v) for v in times.values())
        diff = abs(images["load_pipeline('tiny')"] - images["plain diffusers"]).max()
        print(
            f"{n:2d} image(s): ratio load_pipeline / plain diffusers {a / b:.2f}; largest pixel "
            f"difference {diff:.1e} on [0, 1]"
        )


if __name__ == "__main__":
    main()
