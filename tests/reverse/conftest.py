from __future__ import annotations

import contextlib

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run faster on one thread than on a few contended ones."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def sd_pipe():
    from diffkit.testing import tiny_random_pipeline

    pipe = tiny_random_pipeline("sd")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def sdxl_pipe():
    from diffkit.testing import tiny_random_pipeline

    pipe = tiny_random_pipeline("sdxl")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def pipes(sd_pipe, sdxl_pipe):
    return {"sd": sd_pipe, "sdxl": sdxl_pipe}


@contextlib.contextmanager
def swapped_scheduler(pipe, name):
    """Temporarily give *pipe* the scheduler *name* (built from its config), for reference calls."""
    from diffkit.pipeline import make_scheduler

    old = pipe.scheduler
    pipe.scheduler = make_scheduler(name, old.config)
    try:
        yield pipe
    finally:
        pipe.scheduler = old


def reference(pipe, prompt, *, steps, guidance_scale, seed=0, size=32, scheduler=None, **kwargs):
    """What ``pipe(...)`` itself produces: ``(H, W, 3)`` float in [0, 1]."""
    ctx = swapped_scheduler(pipe, scheduler) if scheduler else contextlib.nullcontext(pipe)
    with ctx as p:
        if "image" not in kwargs:
            kwargs.setdefault("height", size)
            kwargs.setdefault("width", size)
        out = p(
            prompt,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=torch.Generator().manual_seed(seed),
            output_type="np",
            **kwargs,
        )
    return out.images[0]


@pytest.fixture(scope="session")
def ref():
    """The reference: ``ref(pipe, prompt, steps=..., guidance_scale=..., scheduler=..., ...)``."""
    return reference
