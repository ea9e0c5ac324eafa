"""The pictures a lesson draws by the dozen, kept on disk so a notebook runs fast in class.

:func:`chain_images` is ``[ReverseChain(pipe, prompt, seed=s, …).run().image for s in seeds]``,
with every image kept under ``shared_out("course_cache")``, keyed by the model's weights (a hash of
every parameter of its U-Net, VAE and text encoder), the arguments, and the versions of torch and
diffusers. A hit returns the very array the chain drew (float32, saved losslessly); a miss draws
it and keeps it. ``diffkit course warm`` draws every picture the notebooks ask for before class
(:data:`LESSON_IMAGES`), so the classroom run reads them from disk.

Delete ``out/course_cache/`` (or pass ``cache=False``) to draw them again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._files import atomic_write_bytes, shared_out

__all__ = ["LESSON_IMAGES", "chain_images", "model_fingerprint"]

#: What notebooks 02 and 04 draw in bulk: (prompt, seeds, keyword arguments of chain_images).
#: ``diffkit course warm`` draws each; the notebooks' calls must match (tests/test_course.py checks it).
LESSON_IMAGES: tuple[tuple[str, tuple[int, ...], dict[str, Any]], ...] = (
    # 02 §5b: over seeds 0–7, how often PNDM and DDIM draw the asked object
    *(("a red circle", tuple(range(8)), {"scheduler": name}) for name in ("pndm", "ddim")),
    # 04 §4: adherence to unusual prompts against the guidance scale
    *(
        (prompt, tuple(range(8)), {"guidance_scale": w})
        for prompt in ("a man nurse", "a woman firefighter", "a purple triangle")
        for w in (1.0, 3.0, 7.5)
    ),
    # 04 §6: a nurse in English and in Spanish
    *((prompt, tuple(range(8)), {}) for prompt in ("a nurse", "una enfermera")),
)

_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_fingerprint(pipe: Any) -> str:
    """A hash of every parameter and buffer of *pipe*'s U-Net, VAE and text encoder (and their
    classes): two pipelines share it only when they hold the same weights."""
    import torch

    if pipe in _FINGERPRINTS:
        return _FINGERPRINTS[pipe]
    h = hashlib.sha256()
    for name in ("unet", "vae", "text_encoder"):
        module = getattr(pipe, name, None)
        if module is None:
            continue
        h.update(f"{name}:{type(module).__name__}".encode())
        for key, tensor in module.state_dict().items():
            h.update(key.encode())
            h.update(tensor.detach().to("cpu").contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
    _FINGERPRINTS[pipe] = h.hexdigest()[:20]
    return _FINGERPRINTS[pipe]


def _key(prompt: str, seed: int, options: dict[str, Any]) -> str:
    import diffusers
    import torch

    spec = {
        "prompt": prompt,
        "seed": int(seed),
        **options,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def chain_images(
    pipe: Any,
    prompt: str,
    seeds: Iterable[int],
    *,
    steps: int = 20,
    guidance_scale: float = 7.5,
    scheduler: str | None = None,
    size: int | None = None,
    cache: bool | str | os.PathLike = True,
) -> list[Any]:
    """The final image of ``ReverseChain(pipe, prompt, steps=…, seed=s, …).run()`` for each seed
    in *seeds*, as float32 arrays (height, width, 3) in [0, 1], from the course cache when it holds
    them (see the module's doc). *cache*: ``True`` for ``shared_out("course_cache")``, a folder for
    another, ``False`` to draw without keeping. *size* defaults to the model's own (``sample_size × vae_scale_factor``)."""
    import numpy as np

    from ..reverse import ReverseChain

    if size is None:
        size = int(pipe.unet.config.sample_size * pipe.vae_scale_factor)
    options = {"steps": int(steps), "guidance_scale": float(guidance_scale), "scheduler": scheduler, "size": int(size)}
    if cache is False:
        folder = None
    else:
        root = shared_out("course_cache") if cache is True else Path(cache)
        folder = root / model_fingerprint(pipe)
    images = []
    for seed in seeds:
        path = folder / f"{_key(prompt, seed, options)}.npy" if folder is not None else None
        if path is not None and path.is_file():
            images.append(np.load(path))
            continue
        chain = ReverseChain(
            pipe,
            prompt,
            steps=steps,
            seed=int(seed),
            guidance_scale=guidance_scale,
            scheduler=scheduler,
            height=size,
            width=size,
        )
        image = np.asarray(chain.run().image, dtype=np.float32)
        if path is not None:
            buf = io.BytesIO()
            np.save(buf, image)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, buf.getvalue())
        images.append(image)
    return images
