"""Headless tests: set widget values and press buttons through the Python API."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from diffkit import get_schedule, q_sample, q_step, sample_image, to_model_range
from diffkit.widgets import ForwardChainExplorer, ScheduleExplorer, TwoPixelExplorer
from diffkit.widgets.two_pixel import parse_points


def test_widgets_import_in_a_plain_process():
    code = "import diffkit.widgets as w; print(sorted(w.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "ScheduleExplorer" in out.stdout


def test_schedule_explorer_readouts_match_the_library():
    e = ScheduleExplorer(schedules=("linear", "cosine"), image_size=32)
    assert e.error.value == ""
    before = [b.children[0].value for b in e.images.children]
    plot_before = e.plot.value
    e.t.value = 600
    rows = e.values_at(600)
    for row, name in zip(rows, ("linear", "cosine")):
        s = get_schedule(name)
        assert row["signal"] == pytest.approx(s.sqrt_alphas_cumprod[600])
        assert row["noise"] == pytest.approx(s.sqrt_one_minus_alphas_cumprod[600])
        assert f"{s.sqrt_alphas_cumprod[600]:.4f}" in e.readout.value
    # each column says which quantity it is: ᾱ is the share of variance, √ᾱ a scale (amplitude)
    assert "ᾱ_t (signal's share of the variance)" in e.readout.value
    assert "√ᾱ_t (scale of x₀ in x_t)" in e.readout.value and "signal kept" not in e.readout.value
    after = [b.children[0].value for b in e.images.children]
    assert all(a != b for a, b in zip(before, after))  # the images changed
    assert e.plot.value != plot_before  # the t marker moved
    # the shown frame is the library's closed form with the explorer's fixed noise
    torch.testing.assert_close(e.frame(e.schedules[0], 600), q_sample(e.x0, 600, "linear", noise=e.noise))


def test_schedule_explorer_controls():
    e = ScheduleExplorer(schedules=("linear",), image_size=16)
    e.schedule_select.value = ("linear", "scaled_linear", "karras")
    assert len(e.images.children) == 3
    e.T.value = 200
    assert e.t.max == 199 and e.schedules[0].num_train_timesteps == 200
    e.use_defaults.value = False
    e.beta_start.value, e.beta_end.value = 1e-3, 0.05
    lin = e.schedules[0]
    np.testing.assert_allclose(lin.betas, get_schedule("linear", 200, beta_start=1e-3, beta_end=0.05).betas)
    # an error shows inside the widget, in plain words, and clears when fixed
    e.schedule_select.value = ()
    assert "pick at least one schedule" in e.error.value
    e.schedule_select.value = ("cosine",)
    assert e.error.value == ""


def test_forward_chain_explorer_uses_diffkit_tiny_for_latents_by_default():
    e = ForwardChainExplorer(sample_image("coffee", 32), image_size=32)
    assert type(e.pipe).__name__ == "StableDiffusionPipeline" and not e.space.disabled


def test_forward_chain_explorer_closed_form_and_markov_step(monkeypatch):
    import diffkit.widgets.forward_chain as fc

    monkeypatch.setattr(fc, "_default_pipe", lambda: None)  # as when diffkit-tiny cannot load
    img = sample_image("coffee", 32)
    e = ForwardChainExplorer(img, pipe=None)
    assert e.space.disabled and "load_pipeline" in e.space.tooltip  # latent space is off, and says why
    first = e.view.value
    e.t.value = 250
    assert e.view.value != first
    s = get_schedule("linear")
    torch.testing.assert_close(e.current(), q_sample(to_model_range(img), 250, s, noise=e.noise))
    assert f"{s.sqrt_alphas_cumprod[250]:.3f}" in e.readout.value
    assert f"{s.sqrt_one_minus_alphas_cumprod[250]:.3f}" in e.readout.value
    x250 = e.current().clone()
    e.step_button.click()
    assert e.t.value == 251 and e.markov_steps == 1
    torch.testing.assert_close(e.current(), q_step(x250, 251, s, seed=e.seed + 251))
    assert "1 Markov step" in e.readout.value
    e.t.value = 100  # moving the slider returns to the closed form
    assert e.markov_steps == 0
    e.t.value = 999
    e.step_button.click()
    assert "last step" in e.error.value


def test_forward_chain_explorer_upload_and_bad_upload():
    import datetime as dt
    import io

    when = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

    e = ForwardChainExplorer(sample_image("coffee", 32), pipe=None, image_size=32)
    buf = io.BytesIO()
    sample_image("rocket", 48).save(buf, "PNG")
    e.upload.value = (
        {
            "name": "rocket.png",
            "type": "image/png",
            "size": len(buf.getvalue()),
            "content": memoryview(buf.getvalue()),
            "last_modified": when,
        },
    )
    assert e.error.value == ""
    assert e.x0_pixels.shape == (3, 32, 32)
    e.upload.value = (
        {"name": "notes.txt", "type": "text/plain", "size": 3, "content": memoryview(b"abc"), "last_modified": when},
    )
    assert "upload a PNG or JPEG" in e.error.value


def test_forward_chain_explorer_latent_space(tiny_sd):
    e = ForwardChainExplorer(sample_image("astronaut", 32), pipe=tiny_sd, image_size=32)
    e.space.value = "latents"
    assert e.error.value == ""
    assert e.x0.shape == (4, 16, 16)
    e.t.value = 500
    assert e.decoded.value and e.view.value
    assert e.sched.name == "pipeline scheduler"
    np.testing.assert_allclose(e.sched.alphas_cumprod, tiny_sd.scheduler.alphas_cumprod.double().numpy(), atol=1e-12)


def test_two_pixel_explorer():
    e = TwoPixelExplorer(n_chains=50)
    assert e.error.value == ""
    for _ in range(3):
        e.step_button.click()
    assert len(e.path) == 4 and len(e.likely) == 3
    assert "after 3 step(s)" in e.step_readout.value
    # the bell's width is the control's value
    e.width.value = 10.0
    assert "width √β = 10.00 px" in e.step_readout.value
    e.reset_button.click()
    assert len(e.path) == 1
    before = e.chain_plot.value
    e.chain_t.value = 999
    assert e.chain_plot.value != before
    e.rev_step.value = 1000
    end = e.reverse[-1]
    data = np.asarray(parse_points(e.data_text.value)) / 127.5 - 1
    assert np.min(np.linalg.norm(end[:, None] - data[None], axis=2), axis=1).max() < 0.02
    e.data_text.value = "300,1"
    e.run_reverse.click()
    assert "[0, 255]" in e.error.value


def test_parse_points():
    assert parse_points("170,150; (60, 200)") == [(170, 150), (60, 200)]
    with pytest.raises(ValueError, match="170,150"):
        parse_points("oops")
    with pytest.raises(ValueError, match="at least one"):
        parse_points(" ; ")


@pytest.mark.slow  # in make test-all (a subprocess or a long run: the fast loop stays under 5 min)
@pytest.mark.parametrize(
    "make",
    [
        lambda: ScheduleExplorer(image_size=16),
        lambda: ForwardChainExplorer(sample_image("coffee", 16), pipe=None, image_size=16),
        lambda: TwoPixelExplorer(n_chains=10),
    ],
)
def test_explorers_leave_nothing_behind_when_closed(make):
    import gc
    import tracemalloc

    from ipywidgets.widgets.widget import _instances

    make().close()  # warm caches (fonts, imports) before measuring
    gc.collect()
    n0 = len(_instances)
    tracemalloc.start()
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    for _ in range(5):
        e = make()
        e.close()
        del e
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(_instances) == n0  # every widget was closed
    assert grown < 2 * 2**20, f"{grown / 2**20:.1f} MiB kept after 5 explorers"
