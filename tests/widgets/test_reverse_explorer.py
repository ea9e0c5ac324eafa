"""ReverseChainExplorer driven headlessly: Run, Cancel, the step slider, errors in the widget."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from diffkit.reverse import ReverseChain
from diffkit.widgets import ReverseChainCompare, ReverseChainExplorer


@pytest.fixture(scope="module")
def pipe():
    from diffkit.testing import tiny_random_pipeline

    torch.set_num_threads(1)
    return tiny_random_pipeline("sd")


def test_run_then_scrub_the_steps(pipe):
    e = ReverseChainExplorer(pipe, prompt="a red circle", steps=3, size=32, seed=1, exact=False)
    e.run(wait=True)
    assert e.error.value == "" and "done" in e.status.value
    traj = e.trajectory
    assert len(traj) == 3 and e.step.max == 2 and e.step.value == 2
    # the explorer's run is the library's run: same final latents as a fresh ReverseChain
    ref = ReverseChain(
        pipe, "a red circle", steps=3, height=32, width=32, seed=1, scheduler=e.scheduler.value, capture_attention=True
    ).run()
    assert torch.equal(traj[-1].prev_sample, ref[-1].prev_sample)
    shown = e.x_t.value
    e.step.value = 0
    assert e.x_t.value != shown
    assert f"{traj[0].sigma:.4f}" in e.table.value
    assert f"{traj[0].stats['eps_text']:.4f}" in e.table.value
    symbol = traj[0].prediction_symbol  # rows in the model's own symbol; a cosine called a cosine
    assert f"rms of {symbol}_c (with text)" in e.table.value and f"cosine of {symbol}_c and {symbol}_u" in e.table.value
    assert "rms eps" not in e.table.value and "rms cos" not in e.table.value
    for img in e.noise:
        assert img.value
    # exact x̂_0 and the attention of one word
    fast = e.x0.value
    e.exact.value = True  # ticked: decoded in the background, then shown
    assert e.wait_decoded(60)
    assert e.x0.value != fast and e.x0.format == "png" and e.error.value == ""
    words = [label for label, _ in e.token.options]
    assert any("red" in w for w in words)
    e.token.value = 2
    assert e.attention.value and e.error.value == ""
    e.close()


def test_next_step_walks_one_unet_call_at_a_time(pipe):
    e = ReverseChainExplorer(pipe, steps=3, size=32)
    e.next_button.click()
    assert len(e.trajectory) == 1 and "stepping by hand: 1 of 3" in e.status.value
    e.next_button.click()
    assert len(e.trajectory) == 2 and e.step.value == 1
    e.close()


def test_guidance_one_has_no_unconditional_panels(pipe):
    e = ReverseChainExplorer(pipe, steps=2, size=32, guidance_scale=1.0)
    e.run(wait=True)
    assert e.error.value == ""
    assert e.noise[0].value == b"" and e.noise[3].value == b""  # ε̂_u and ε̂_c − ε̂_u do not exist
    assert e.noise[1].value and e.noise[2].value
    e.close()


def test_cancel_and_one_run_at_a_time(pipe):
    e = ReverseChainExplorer(pipe, steps=40, size=32)
    e.run()
    e.run_button.click()  # a second Run while one runs is refused, in the widget
    assert "already going" in e.error.value
    e.cancel_button.click()
    e.wait(60)
    assert not e.running
    assert len(e.trajectory) < 40 and "cancelled" in e.status.value
    assert not e.run_button.disabled and e.cancel_button.disabled
    e.close()


def test_errors_show_in_the_widget(pipe):
    e = ReverseChainExplorer(pipe, steps=2, size=32)
    e.scheduler.options = [*e.scheduler.options, "warp_drive"]
    e.scheduler.value = "warp_drive"
    e.run_button.click()
    assert "unknown scheduler" in e.error.value and "ddim" in e.error.value
    e.scheduler.value = "ddim"
    e.prompt.value = " ".join(["red"] * 90)  # over CLIP's 77 tokens: a warning naming the dropped words
    e.run(wait=True)
    assert "red" in e.status.value.lower() and "drop" in e.status.value.lower()
    e.close()


def test_compare_mode_links_the_step_sliders(pipe):
    c = ReverseChainCompare(pipe, steps=2, size=32, left=dict(scheduler="ddim"), right=dict(scheduler="euler"))
    c.run(wait=True)
    assert c.left.error.value == "" and c.right.error.value == ""
    assert c.left.trajectory[0].sigma_scaled is False and c.right.trajectory[0].sigma_scaled is True
    c.close()


@pytest.mark.slow  # in make test-all (a subprocess or a long run: the fast loop stays under 5 min)
def test_twenty_runs_keep_memory_flat(pipe):
    import tracemalloc

    from ipywidgets.widgets.widget import _instances

    def once():
        e = ReverseChainExplorer(pipe, steps=2, size=32, capture_attention=True)
        e.run(wait=True)
        e.close()

    once()
    gc.collect()
    n0 = len(_instances)
    tracemalloc.start()
    sizes = []
    for _ in range(20):
        once()
        gc.collect()
        sizes.append(tracemalloc.get_traced_memory()[0])
    tracemalloc.stop()
    assert len(_instances) == n0
    growth = sizes[-1] - sizes[4]  # after warm-up, runs 5 → 20
    assert growth < 1 * 2**20, f"memory grew {growth / 2**20:.2f} MiB over 15 runs: {np.diff(sizes)}"


def test_a_missing_model_shows_in_the_widget(monkeypatch):
    import diffkit.pipeline as P

    def missing(*a, **k):
        raise P.PipelineNotAvailableError(
            "could not load 'tiny': weights missing; rebuild with python -m diffkit.tiny.train"
        )

    monkeypatch.setattr(P, "load_pipeline", missing)
    e = ReverseChainExplorer()
    assert "no pipeline to run" in e.error.value and "diffkit.tiny.train" in e.error.value
    assert e.run_button.disabled
    e.close()


def test_model_output_panels_say_what_the_model_predicts():
    from diffkit.testing import tiny_random_pipeline
    from diffkit.widgets import ReverseChainExplorer

    for pt, symbol in (("epsilon", "ε̂"), ("v_prediction", "v̂")):
        e = ReverseChainExplorer(tiny_random_pipeline("sd", prediction_type=pt), steps=2, size=32)
        try:
            titles = [t.value for t in e._noise_titles]
            assert all(symbol in t for t in titles) and not any(("v̂" if symbol == "ε̂" else "ε̂") in t for t in titles)
        finally:
            e.close()


def _png_side(data: bytes) -> tuple[int, int]:
    import io

    from PIL import Image

    return Image.open(io.BytesIO(data)).size


def test_panels_are_classroom_sized_and_keep_the_models_pixels(pipe):
    """x_t and x̂_0 are shown at least 256 px wide, enlarged with nearest neighbour."""
    from PIL import Image

    e = ReverseChainExplorer(pipe, prompt="a red circle", steps=2, size=32, seed=1, exact=True)
    e.run(wait=True)
    assert e.wait_decoded(60)
    assert _png_side(e.x_t.value) == (256, 256) and _png_side(e.x0.value) == (256, 256)
    assert all(_png_side(img.value) == (128, 128) for img in e.noise)
    # nearest neighbour: the 32-px decode scaled ×8 (JPEG adds little noise to flat 8×8 blocks)
    import io

    small = e.trajectory.preview(1, "x0_hat", "exact")
    big = np.asarray(Image.open(io.BytesIO(e.x0.value)).convert("RGB")).astype(int)
    assert np.abs(big[4::8, 4::8] - small.astype(int)).mean() < 6
    e.close()
    wide = ReverseChainExplorer(pipe, steps=2, size=32, display_size=512, exact=False)
    wide.run(wait=True)
    assert _png_side(wide.x0.value) == (512, 512)
    wide.close()


def _decoder_threads() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name == "diffkit-reverse-decode"]


def test_every_step_is_decoded_in_the_background_and_the_slider_shows_the_decodes(pipe):
    """After a run, every step's x_t and x̂_0 is decoded in the background; a move of the slider
    then shows the VAE's own picture (PNG, lossless), exactly ``traj.preview(k, q, "exact")``
    enlarged with nearest neighbour, and the titles say so."""
    import io

    from PIL import Image

    e = ReverseChainExplorer(pipe, prompt="a red circle", steps=4, size=32, seed=1)  # the default: exact
    assert e.exact.value is True
    e.run(wait=True)
    assert e.wait_decoded(60) and e.error.value == ""
    traj = e.trajectory
    assert all(traj.decoded(k, q) for k in range(len(traj)) for q in ("x_t", "x0_hat"))
    for k in (0, 2, 1, 3):
        e.step.value = k
        for img, q in ((e.x_t, "x_t"), (e.x0, "x0_hat")):
            want = np.asarray(Image.fromarray(traj.preview(k, q, "exact")).resize((256, 256), Image.Resampling.NEAREST))
            assert img.format == "png"
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(img.value)).convert("RGB")), want), (k, q)
        assert "exact VAE decode" in e._x_t_title.value and "exact VAE decode" in e._x0_title.value
        assert "fast" not in e._x0_title.value
    assert "ms a step" in e.exact.description
    e.close()
    assert _decoder_threads() == []


def test_the_fast_preview_stands_in_until_a_step_is_decoded(pipe, monkeypatch):
    import threading

    from diffkit.reverse import Trajectory

    gate = threading.Event()
    decode = Trajectory.decode

    def held(self, *a, **k):  # the decoder thread's VAE waits for the test (a decode elsewhere does not)
        if threading.current_thread().name == "diffkit-reverse-decode":
            gate.wait(30)
        return decode(self, *a, **k)

    monkeypatch.setattr(Trajectory, "decode", held)
    e = ReverseChainExplorer(pipe, steps=3, size=32)
    e.run(wait=True)
    assert e.x0.format == "jpeg" and "fast preview" in e._x0_title.value and "decoding: 0 of 3" in e._x0_title.value
    assert e._decoder.running and _decoder_threads() == ["diffkit-reverse-decode"]
    gate.set()
    assert e.wait_decoded(60)
    assert e.x0.format == "png" and "exact VAE decode" in e._x0_title.value  # the shown step, redrawn
    e.close()


def test_cancel_a_new_run_and_close_stop_the_decoding(pipe, monkeypatch):
    import time

    from diffkit.reverse import Trajectory

    decode = Trajectory.decode

    def slow(self, *a, **k):
        time.sleep(0.02)
        return decode(self, *a, **k)

    monkeypatch.setattr(Trajectory, "decode", slow)
    e = ReverseChainExplorer(pipe, steps=30, size=32)
    e.run(wait=True)
    first, old = e.trajectory, e._decoder
    assert old.running
    e.cancel()  # stops after the decode in flight
    assert old.stop(30) and not old.running and _decoder_threads() == []
    done = sum(first.decoded(k, "x_t") for k in range(len(first)))
    assert done < len(first) and "decoding paused" in e._x0_title.value
    e.step.value = 3  # the user moves on: the decoding goes on, from the shown step outwards
    assert e._decoder.running and e._decoder is not old
    e.run(wait=True)  # a second run drops the first one's decodes
    assert e.trajectory is not first and not old.running
    assert sum(first.decoded(k, "x_t") for k in range(len(first))) < len(first)
    assert all(key[0] == id(e.trajectory) for key in e._pictures)
    assert e._decoder.trajectory is e.trajectory and e._decoder.running
    e.close()  # stops and waits for the decoder: nothing keeps running
    assert _decoder_threads() == [] and not e._decoder.running


def test_exact_false_forces_the_fast_preview_and_decodes_nothing(pipe):
    e = ReverseChainExplorer(pipe, steps=2, size=32, exact=False)
    e.run(wait=True)
    assert e._decoder is None and not any(e.trajectory.decoded(k, "x_t") for k in range(2))
    assert e.x0.format == "jpeg" and "fast linear preview" in e._x0_title.value
    assert "exact" not in e._x0_title.value
    e.exact.value = True  # the checkbox turns the decoding on ...
    assert e.wait_decoded(60) and e.x0.format == "png"
    e.exact.value = False  # ... and forces the preview again
    assert e.x0.format == "jpeg" and "fast linear preview" in e._x0_title.value
    e.close()


def test_attention_opens_on_the_first_content_word_with_a_stated_shared_scale(pipe):
    e = ReverseChainExplorer(pipe, prompt="a red circle", steps=2, size=32, exact=False)
    e.run(wait=True)
    label = dict((v, k) for k, v in e.token.options)[e.token.value]
    assert label.endswith("red"), label  # not "a"
    traj = e.trajectory
    from diffkit.reverse.attention import aggregate_attention

    words = aggregate_attention([traj[-1]], list(range(1, traj.tokens.n_tokens - 1)), size=(32, 32))
    assert f"{float(words.max()):.3f}" in e.attention_scale.value
    assert f"softmax over all {traj.tokens.max_length} text positions, padding included" in e.attention_scale.value
    assert e.colorbar.value
    e.close()


@pytest.mark.parametrize(
    "prompt, word",
    [("a red circle", "red"), ("the photo of an old man", "photo"), ("a", "a"), ("A woman pilot", "woman")],
)
def test_first_content_word(pipe, prompt, word):
    from diffkit.reverse import tokenize_prompt

    tokens = tokenize_prompt(pipe.tokenizer, prompt)
    assert tokens.words[tokens.first_content_position].lower() == word


def test_overlay_on_a_fixed_scale_and_its_colorbar():
    from diffkit.reverse.attention import colorbar, overlay

    img = np.zeros((4, 4, 3), np.float32)
    heat = np.full((4, 4), 0.25, np.float32)
    own = overlay(img, heat, alpha=1.0)  # its own min…max: a flat map is the colormap's low end
    fixed = overlay(img, heat, alpha=1.0, vmin=0.0, vmax=0.5)  # the middle of the colormap
    bar = colorbar(5, 1)
    assert (own == bar[0, 0]).all() and (np.abs(fixed.astype(int) - bar[0, 2]).max() <= 1)
    with pytest.raises(ValueError, match="vmax must be greater"):
        overlay(img, heat, vmin=1.0, vmax=0.5)


def test_flux_runs_with_labels_from_its_records():
    from diffkit.testing import tiny_random_pipeline

    flux = tiny_random_pipeline("flux")
    e = ReverseChainExplorer(flux, prompt="a woman pilot", steps=2, size=32, guidance_scale=3.5, exact=False)
    assert list(e.scheduler.options) == ["flow_euler"] and 256 in e.size.options  # Flux's own size: 128 × 2
    e.run(wait=True)
    assert e.error.value == "" and "done: 2 steps" in e.status.value
    rec = e.trajectory[-1]
    assert rec.guidance == "embedded" and "guidance embedded (w = 3.5)" in e.table.value
    assert "v̂ (with text, guidance embedded: one call)" in e._noise_titles[1].value
    assert e.noise[0].layout.visibility == "hidden"  # no unconditional branch was run
    assert [label for label, _ in e.token.options][:3] == ["0: a", "1: woman", "2: pilot"]
    assert e.token.value == 1 and e.attention.value  # opens on "woman"
    e.close()
