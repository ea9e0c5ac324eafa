"""The course's picture cache: what it returns is what the chain draws, bit for bit, and warm fills it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_a_cached_picture_is_the_chains_own_bit_for_bit(tiny_sd, tmp_path, monkeypatch):
    import diffkit.reverse
    from diffkit import ReverseChain
    from diffkit.course import chain_images

    drawn = chain_images(tiny_sd, "a red circle", [3, 4], steps=3, scheduler="ddim", cache=tmp_path)
    size = int(tiny_sd.unet.config.sample_size * tiny_sd.vae_scale_factor)  # the model's own, the default
    fresh = ReverseChain(tiny_sd, "a red circle", steps=3, seed=4, scheduler="ddim", height=size, width=size).run()
    assert drawn[1].dtype == np.float32 and drawn[1].shape == (size, size, 3)
    np.testing.assert_array_equal(drawn[1], fresh.image)
    assert len(list(tmp_path.rglob("*.npy"))) == 2

    def no_drawing(*args, **kwargs):
        raise AssertionError("a cached picture was drawn again")

    monkeypatch.setattr(diffkit.reverse, "ReverseChain", no_drawing)
    again = chain_images(tiny_sd, "a red circle", [3, 4], steps=3, scheduler="ddim", cache=tmp_path)
    for a, b in zip(drawn, again):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(AssertionError, match="drawn again"):  # other arguments are other pictures
        chain_images(tiny_sd, "a red circle", [3], steps=3, scheduler="pndm", cache=tmp_path)


def test_the_fingerprint_follows_the_weights():
    import torch

    from diffkit.course import model_fingerprint

    class Pipe:
        def __init__(self, seed):
            torch.manual_seed(seed)
            self.unet = torch.nn.Linear(3, 2)

    a, b, c = Pipe(0), Pipe(0), Pipe(1)
    assert model_fingerprint(a) == model_fingerprint(b) != model_fingerprint(c)


def test_warm_draws_what_the_notebooks_ask_for():
    """Each set of LESSON_IMAGES is drawn by a chain_images call in notebook 02 or 04: the same
    prompts, seeds 0–7 and options, so the classroom run finds them on disk."""
    from diffkit.course import LESSON_IMAGES

    text = {
        n: "\n".join(
            c["source"] if isinstance(c["source"], str) else "".join(c["source"])
            for c in json.loads((ROOT / "notebooks" / n).read_text(encoding="utf-8"))["cells"]
        )
        for n in ("02_the_reverse_chain.ipynb", "04_text_conditioning.ipynb")
    }
    assert "chain_images(pipe, PROMPT, seeds, steps=20, scheduler=n, size=SIZE)" in text["02_the_reverse_chain.ipynb"]
    assert (
        'for n in ("pndm", "ddim")' in text["02_the_reverse_chain.ipynb"]
        and "seeds = range(8)" in text["02_the_reverse_chain.ipynb"]
    )
    nb04 = text["04_text_conditioning.ipynb"]
    assert "chain_images(pipe, prompt, range(8), steps=20, guidance_scale=w, size=SIZE)" in nb04
    assert "for w in (1.0, 3.0, 7.5)" in nb04
    for prompt, seeds, options in LESSON_IMAGES:
        assert seeds == tuple(range(8))
        if "scheduler" in options:
            assert prompt == "a red circle" and options["scheduler"] in ("pndm", "ddim")
        elif options:
            assert f'"{prompt}"' in nb04 and options["guidance_scale"] in (1.0, 3.0, 7.5)
        else:  # §6, at the default guidance
            assert f'"{prompt}"' in nb04 and prompt in ("a nurse", "una enfermera")
    assert "chain_images(pipe, prompt, range(8), steps=20, size=SIZE) for prompt in PAIR" in nb04
    assert len(LESSON_IMAGES) == 2 + 3 * 3 + 2
