"""How faithful the fast latent preview is on a diffkit-tiny VAE (issue 11).

    python benchmarks/bench_tiny_preview.py [--pipeline DIR | --vae DIR] [--fit 64] [--test 256]

The explorers' fast preview maps each latent pixel to RGB with one linear map plus a bias
(:func:`diffkit.reverse.fast_preview`). This prints its RMS error against the **exact**
decode (the VAE decoder), on [-1, 1], measured on held-out drawings of the pictogram world
(all kinds, two-object scenes included at 128²):

* ``explorer map``: what the explorers use for this VAE (:func:`diffkit.reverse.latent_rgb`,
  a least-squares fit on diffkit's bundled photographs);
* ``world fit``: the same least-squares fit (:func:`diffkit.reverse.fit_latent_rgb`) on
  ``--fit`` other drawings of the world.

Each is compared with the exact decode averaged over the VAE's f × f pixel blocks (the
preview's own resolution; issue 11's bar is an RMS of at most 0.10 there), and with the
exact decode at full resolution (the preview upsampled, nearest neighbour).
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path


def _world_images(n: int, seed: int, size: int):
    from diffkit.tiny import world as w

    cfg = w.WorldConfig(pair_fraction=0.3 if size > w.IMAGE_SIZE else 0.0)
    return [s.image for s in w.sample_world(n, seed=seed, config=cfg, size=size)]


def preview_errors(vae, rgb_map, images) -> dict:
    """RMS of the linear preview against the exact decode, at latent and at full resolution."""
    import torch
    import torch.nn.functional as F

    from diffkit.reverse import fast_preview
    from diffkit.tiny import data as d

    x = d.images_to_tensor(images)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    with torch.no_grad():
        lat = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
        exact = vae.decode(lat / vae.config.scaling_factor).sample.clamp(-1, 1)
    fast = fast_preview(lat, rgb_map) * 2 - 1  # [0, 1] → [-1, 1]
    pooled = F.avg_pool2d(exact, factor)
    up = F.interpolate(fast, size=exact.shape[-2:], mode="nearest")
    return {
        "latent_res": float((fast - pooled.clamp(-1, 1)).pow(2).mean().sqrt()),
        "full_res": float((up - exact).pow(2).mean().sqrt()),
        "exact_vs_drawn": float((exact - x).pow(2).mean().sqrt()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--pipeline", type=Path, default=None, help="pipeline folder (default: shipped)")
    g.add_argument("--vae", type=Path, default=None, help="an AutoencoderKL folder instead")
    p.add_argument("--fit", type=int, default=64, help="world drawings for the world fit")
    p.add_argument("--test", type=int, default=256, help="held-out world drawings")
    p.add_argument("--threads", type=int, default=int(os.environ.get("DIFFKIT_THREADS", "2")))
    args = p.parse_args()

    import torch
    from diffusers import AutoencoderKL

    from diffkit import tiny
    from diffkit.reverse import fit_latent_rgb, latent_rgb

    torch.set_num_threads(args.threads)
    random.seed(0)
    if args.vae is not None:
        path = args.vae
    else:
        path = (args.pipeline or tiny.pipeline_path()) / "vae"
    vae = AutoencoderKL.from_pretrained(path).float().eval()
    size = int(vae.config.sample_size)
    print(f"vae: {path}  image size {size}  scaling factor {vae.config.scaling_factor:.5f}")
    t0 = time.perf_counter()
    test = _world_images(args.test, seed=12345, size=size)  # held out: other seeds than the fit
    maps = {
        "explorer map": latent_rgb(vae),
        "world fit": fit_latent_rgb(vae, images=_world_images(args.fit, seed=777, size=size)),
    }
    for name, m in maps.items():
        e = preview_errors(vae, m, test)
        print(
            f"{name:13s} RMS vs exact decode on {len(test)} held-out drawings: "
            f"latent resolution {e['latent_res']:.3f} (bar 0.10)  full resolution {e['full_res']:.3f}"
        )
    print(f"(exact decode vs the drawings themselves: RMS {e['exact_vs_drawn']:.3f})")
    print(f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
