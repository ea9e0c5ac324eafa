"""Batches of the pictogram world as tensors, and the latent cache used to train the U-Net."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffkit.tiny import world as _w

from ..errors import StateError

__all__ = [
    "LatentCache",
    "atomic_save",
    "cell_key",
    "figure_mask",
    "images_to_tensor",
    "latent_masks",
    "save_grid",
    "tensor_to_images",
    "world_batch",
]


def images_to_tensor(images):
    """PIL images → float tensor (B, 3, H, W) in [-1, 1]."""
    import torch

    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def tensor_to_images(x):
    """Float tensor (B, 3, H, W) in [-1, 1] → PIL images."""
    from PIL import Image

    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def world_batch(rng: random.Random, n: int, config: _w.WorldConfig | None = None, *, size: int = _w.IMAGE_SIZE):
    """*n* samples from the world at *size*² pixels: (images tensor, attributes, captions)."""
    atts, caps, ims = [], [], []
    for _ in range(n):
        a, c = _w.sample_attributes(rng, config)
        atts.append(a)
        caps.append(c)
        ims.append(_w.draw(a, rng, size=size))
    return images_to_tensor(ims), atts, caps


def cell_key(a: _w.Attributes) -> tuple:
    """The world cell of *a*: (kind, colour, shape), (kind, occupation, gender), or
    ``("pair",)`` for every two-object scene (one pool; each row keeps its own attributes)."""
    if a.kind == "shape":
        return ("shape", a.color, a.shape)
    if a.kind == "pair":
        return ("pair",)
    return ("person", a.occupation, a.gender)


def background_of(a: _w.Attributes) -> tuple[int, int, int]:
    """The flat background colour an image of *a* is drawn on."""
    if a.kind in ("shape", "pair"):
        return _w.SHAPE_BACKGROUND
    return _w.OCCUPATION_BACKGROUNDS[a.occupation]


def cell_atts(a, ims) -> list:
    """The attributes of a chunk of drawn cache images: one cell's, or the pairs' own list."""
    return list(a) if isinstance(a, list) else [a] * len(ims)


def figure_mask(image, a: _w.Attributes) -> np.ndarray:
    """Boolean (H, W): the pixels of the figure (shape, or silhouette and accent), not background."""
    arr = np.asarray(image.convert("RGB"), dtype=np.int16)
    return np.abs(arr - np.array(background_of(a), dtype=np.int16)).max(axis=-1) > 24


def latent_masks(images, attributes, *, factor: int = 4):
    """Figure masks at latent resolution, grown by one latent pixel: uint8 (B, 1, H/f, W/f).

    A latent pixel is marked when any image pixel under it belongs to the figure; growing
    the mask by one latent pixel covers where the *other* silhouette would differ (a dress
    is wider than a torso).
    """
    import torch
    import torch.nn.functional as F

    m = np.stack([figure_mask(im, a) for im, a in zip(images, attributes)])
    m = torch.from_numpy(m).float().unsqueeze(1)
    m = F.max_pool2d(m, factor)
    m = F.max_pool2d(m, 3, stride=1, padding=1)
    return m.to(torch.uint8)


@dataclass
class LatentCache:
    """Scaled VAE latents of drawn images, indexed by world cell.

    ``latents`` is (N, C, h, w) float16, already multiplied by the VAE scaling factor;
    ``cells[key]`` lists the rows of that cell; ``masks`` (N, 1, h, w) uint8 marks the
    figure's latent pixels (see :func:`latent_masks`), or is ``None`` for an older cache.
    ``pairs`` maps each row of the ``("pair",)`` pool to its own :class:`~diffkit.tiny.world.Attributes`.
    """

    latents: object  # torch.Tensor
    cells: dict
    masks: object = None  # torch.Tensor | None
    pairs: dict | None = None

    def resolve_pairs(self, rng: random.Random, attributes: list, captions: list):
        """Swap each two-object sample for a random row of the pair pool.

        The pool is i.i.d. draws of the world's pair distribution, so a random row and a
        random caption of *its* attributes are a sample of the same distribution. Returns
        ``(rows, captions)``: the chosen row per pair sample (``None`` elsewhere) and the
        captions with the pair ones replaced.
        """
        rows, caps = [], []
        for a, c in zip(attributes, captions):
            if a.kind == "pair":
                if not self.pairs:
                    raise StateError(
                        "the latent cache has no two-object scenes; rebuild it with "
                        "`python -m diffkit.tiny.train --recipe tiny2 --stage cache`"
                    )
                row = rng.choice(self.cells[("pair",)])
                rows.append(row)
                caps.append(rng.choice(self.pairs[row].captions()))
            else:
                rows.append(None)
                caps.append(c)
        return rows, caps

    def take(self, idx):
        """``(latents, masks)`` of the cache rows *idx*, float32 (masks may be None)."""
        masks = None if self.masks is None else self.masks[idx].float()
        return self.latents[idx].float(), masks

    def sample_rows(self, rng: random.Random, attributes: list[_w.Attributes], rows=None):
        """One random cache row of each attribute's cell (*rows*, from :meth:`resolve_pairs`, fixes
        the row where it is not ``None``): a long tensor for :meth:`take`."""
        import torch

        rows = rows or [None] * len(attributes)
        return torch.tensor([rng.choice(self.cells[cell_key(a)]) if r is None else r for a, r in zip(attributes, rows)])


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` through a temporary file and a rename: never a half-written file."""
    import torch

    tmp = Path(path).with_suffix(Path(path).suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_grid(images, cols: int, path: Path) -> None:
    """Tile PIL *images* row by row, *cols* per row, into a PNG at *path* (atomically)."""
    import io

    from PIL import Image

    from diffkit._files import atomic_write_bytes

    w, h = images[0].size
    rows = (len(images) + cols - 1) // cols
    grid = Image.new("RGB", (cols * w, rows * h), (0, 0, 0))
    for i, im in enumerate(images):
        grid.paste(im, ((i % cols) * w, (i // cols) * h))
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
