"""The ``cache`` stage: a fixed pool of drawn images per world cell (and two-object scenes),
encoded once to latents, with ``scaling_factor`` set to give them unit variance, as SD's 0.18215
was set; and the per-object masks the polish stage's token loss reads."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import torch

from diffkit.tiny import data as _d
from diffkit.tiny import models as _m
from diffkit.tiny import world as _w
from diffkit.tiny.recipe import Recipe, seed_for

from ..errors import StateError

__all__ = ["build_cache", "cache_draws", "load_cache", "object_masks"]

log = logging.getLogger("diffkit.tiny.train")
ARCH = "tiny2"  # the architecture a cache file names (diffkit-tiny 1's caches said "tiny1")


@torch.no_grad()
def cache_draws(recipe: Recipe, *, layers: bool = False):
    """The cache's images, cell by cell, in chunks: ``(cell, images)``; deterministic.

    With *layers*, chunks are ``(cell, images, layers)``: each two-object scene's own
    object masks (``None`` for other images), from the same draws.
    """
    from diffkit.tiny.grounding import draw_layers

    rng = random.Random(seed_for(recipe, "cache.draws"))
    size, per_cell, pairs = recipe.image_size, recipe.cache.per_cell, recipe.cache.pairs

    def chunk(atts):
        if not layers:
            return ([_w.draw(a, rng, size=size) for a in atts],)
        return tuple(zip(*(draw_layers(a, rng, size=size) for a in atts)))

    for a in _w.all_attributes():
        for i in range(0, per_cell, 200):
            yield (a, *chunk([a] * min(200, per_cell - i)))
    # the pair pool: i.i.d. two-object scenes, each with its own attributes
    cfg = _w.WorldConfig(shape_fraction=1.0, pair_fraction=1.0)
    for i in range(0, pairs, 200):
        yield (atts := [_w.sample_attributes(rng, cfg)[0] for _ in range(min(200, pairs - i))], *chunk(atts))


def _check_arch(st: dict, path: Path) -> None:
    if st.get("arch", "tiny1") != ARCH:
        raise StateError(
            f"{path} holds {st.get('arch', 'tiny1')} latents but the recipe is {ARCH}; use another --run-dir"
        )


def _add_masks(st: dict, recipe: Recipe, path: Path) -> None:
    """A cache from before the figure masks: the draws are deterministic, so redraw the same
    images and add their masks without encoding them again."""
    st["masks"] = torch.cat([_d.latent_masks(ims, _d.cell_atts(a, ims)) for a, ims in cache_draws(recipe)])
    if len(st["masks"]) != len(st["latents"]):
        raise StateError(
            f"{path} holds {len(st['latents'])} latents but the recipe draws "
            f"{len(st['masks'])} images; delete it and run `--stage cache` again"
        )
    _d.atomic_save(st, path)
    log.info("cache: added figure masks to %s", path)


def build_cache(recipe: Recipe, run_dir: Path, *, device: str = "cpu") -> None:
    """Encode the cache's drawings with ``run_dir/vae`` into ``run_dir/latents.pt``."""
    from diffusers import AutoencoderKL

    path = run_dir / "latents.pt"
    if path.exists():
        st = torch.load(path, weights_only=False)
        _check_arch(st, path)
        if "masks" not in st:
            _add_masks(st, recipe, path)
        else:
            log.info("cache: found %s", path)
        return
    vae = AutoencoderKL.from_pretrained(run_dir / "vae").eval().to(device)
    lat, masks, keys, pairs, t0 = [], [], [], {}, time.time()
    for a, ims in cache_draws(recipe):
        atts = _d.cell_atts(a, ims)
        with torch.no_grad():
            lat.append(vae.encode(_d.images_to_tensor(ims).to(device)).latent_dist.mean.cpu())
        masks.append(_d.latent_masks(ims, atts, factor=_m.VAE_FACTOR))
        for b in atts:
            if b.kind == "pair":
                pairs[len(keys)] = b
            keys.append(_d.cell_key(b))
    lat = torch.cat(lat)
    scale = _m.scaling_factor(lat)
    vae.register_to_config(scaling_factor=scale)
    vae.save_pretrained(run_dir / "vae", safe_serialization=True)
    index: dict = {}
    for i, k in enumerate(keys):
        index.setdefault(k, []).append(i)
    st = {
        "latents": (lat * scale).half(),
        "masks": torch.cat(masks),
        "cells": index,
        "pairs": pairs,
        "scaling_factor": scale,
        "arch": ARCH,
    }
    _d.atomic_save(st, path)
    log.info(
        "cache: %d latents %s (%d two-object scenes), unscaled mean %.4f std %.4f, per-channel std %s, "
        "scaling factor %.5f, %.0f s",
        len(keys),
        tuple(lat.shape[1:]),
        len(pairs),
        float(lat.mean()),
        float(lat.std()),
        [round(float(v), 4) for v in lat.std(dim=(0, 2, 3))],
        scale,
        time.time() - t0,
    )


def load_cache(run_dir: Path, figure_weight: float) -> _d.LatentCache:
    """The run's latent cache, checked for its architecture and (when weighed) figure masks."""
    path = run_dir / "latents.pt"
    st = torch.load(path, weights_only=False)
    _check_arch(st, path)
    cache = _d.LatentCache(st["latents"], st["cells"], st.get("masks"), st.get("pairs"))
    if cache.masks is None and figure_weight != 1.0:
        raise StateError(f"{path} has no figure masks; run `--stage cache` to add them")
    return cache


def object_masks(recipe: Recipe, run_dir: Path, n: int) -> torch.Tensor:
    """The cache's per-object latent masks (``object_masks.pt``, redrawn once, deterministic)."""
    from diffkit.tiny import grounding as _g

    path = run_dir / "object_masks.pt"
    if path.exists():
        m = torch.load(path, weights_only=True)
    else:
        t0 = time.time()
        m = _g.object_masks(cache_draws(recipe, layers=True), factor=_m.VAE_FACTOR)
        _d.atomic_save(m, path)
        log.info("polish: object masks %s in %.0f s", tuple(m.shape), time.time() - t0)
    if len(m) != n:
        raise StateError(f"{path} holds {len(m)} images but the latent cache {n}; delete it to redraw")
    return m
