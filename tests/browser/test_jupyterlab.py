"""The explorers in a real browser: JupyterLab on loopback, driven by Playwright in Chromium.

Starts JupyterLab on 127.0.0.1 with a token, opens a notebook that displays each explorer,
runs it, drives a slider and a button, and checks the rendered image changed. Screenshots are
kept in ``out/browser-screenshots/`` (or ``$DIFFKIT_SCREENSHOTS``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("DIFFKIT_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("DIFFKIT_SCREENSHOTS", Path(__file__).resolve().parents[2] / "out" / "browser-screenshots"))

CELLS = {
    "schedule": "from diffkit.widgets import ScheduleExplorer\nexplorer = ScheduleExplorer(image_size=64)\nexplorer",
    "forward": (
        "from diffkit.widgets import ForwardChainExplorer\n"
        "explorer = ForwardChainExplorer(image_size=64, pipe=None)\nexplorer"
    ),
    "two_pixel": "from diffkit.widgets import TwoPixelExplorer\nexplorer = TwoPixelExplorer(n_chains=100)\nexplorer",
}


def _tiny_weights_present() -> bool:
    try:
        from diffkit import tiny

        tiny.pipeline_path()
        return True
    except (ImportError, OSError):
        return False


# The reverse explorer on diffkit-tiny when its weights are here (the README's picture comes
# from this screenshot), else on a tiny random pipeline, with its default: exact pictures,
# decoded in the background after the run. A second cell waits for the decodes and prints the
# SHA-256 of the PNG the explorer must show at step 0 (the library's exact decode, enlarged).
def _unet_calls(steps: int) -> int:
    """U-Net calls of a *steps*-step chain under diffkit-tiny's own sampler (PNDM makes one more)."""
    import json

    import diffusers

    from diffkit import tiny

    folder = tiny.pipeline_path()
    name = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["_class_name"]
    sched = getattr(diffusers, name).from_pretrained(folder, subfolder="scheduler")
    sched.set_timesteps(steps)
    return len(sched.timesteps)


if _tiny_weights_present():
    REVERSE_STEPS = 20
    REVERSE_CALLS = _unet_calls(REVERSE_STEPS)
    CELLS["reverse"] = (
        "from diffkit.widgets import ReverseChainExplorer\n"
        "explorer = ReverseChainExplorer(prompt='a woman pilot', steps=20, seed=3, run=True)\n"
        "explorer"
    )
else:
    REVERSE_STEPS = REVERSE_CALLS = 4
    CELLS["reverse"] = (
        "from diffkit.testing import tiny_random_pipeline\n"
        "from diffkit.widgets import ReverseChainExplorer\n"
        "explorer = ReverseChainExplorer(tiny_random_pipeline('sd'), steps=4, size=32, run=True)\n"
        "explorer"
    )
EXPECTED = (
    "import hashlib\n"
    "from diffkit.widgets._common import encode_image\n"
    "from diffkit.widgets.reverse_panels import resize\n"
    "explorer.wait()\n"
    "assert explorer.wait_decoded(300)\n"
    "for q in ('x_t', 'x0_hat'):\n"
    "    png = encode_image(resize(explorer.trajectory.preview(0, q, 'exact'), 256), 'png')\n"
    "    print('expected', q, hashlib.sha256(png).hexdigest())\n"
)


# Flux: the tiny random pipeline, built offline in the kernel (packed latents, T5 tokens, embedded guidance)
CELLS["reverse_flux"] = (
    "from diffkit.testing import tiny_random_pipeline\n"
    "from diffkit.widgets import ReverseChainExplorer\n"
    "explorer = ReverseChainExplorer(tiny_random_pipeline('flux'), prompt='a woman pilot', "
    "steps=4, size=32, guidance_scale=3.5, exact=True, run=True)\n"
    "explorer"
)


# The reverse explorer in Spanish (diffkit.set_language("es") before it is built), on the tiny random pipeline
CELLS["reverse_es"] = (
    "import diffkit\n"
    "diffkit.set_language('es')\n"
    "from diffkit.testing import tiny_random_pipeline\n"
    "from diffkit.widgets import ReverseChainExplorer\n"
    "explorer = ReverseChainExplorer(tiny_random_pipeline('sd'), prompt='a woman pilot', steps=4, size=32, run=True)\n"
    "explorer"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(*code: str) -> dict:
    return {
        "cells": [
            {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": c} for c in code
        ],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing; install Debian's chromium (apt-get install chromium)")
    pytest.importorskip("jupyterlab")
    root = tmp_path_factory.mktemp("lab")
    for name, code in CELLS.items():
        cells = (code, EXPECTED) if name == "reverse" else (code,)
        (root / f"{name}.ipynb").write_text(json.dumps(_notebook(*cells)))
    port, token = _free_port(), secrets.token_hex(16)
    # the kernel imports the diffkit of this checkout (a git worktree beside an editable install included)
    checkout = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (checkout, os.environ.get("PYTHONPATH", "")) if p)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(root / ".jupyter"),
        "JUPYTER_RUNTIME_DIR": str(root / ".rt"),
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": path,
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--ServerApp.open_browser=False",
            "--allow-root",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read().decode(errors="replace")[-3000:]) from None
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("JupyterLab did not start within 120 s")
    yield url, token
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-quic",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield b
        b.close()


def _open_and_run(browser, lab, name):
    url, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    # a workspace of its own, so tabs from the other tests do not come back
    page.goto(f"{url}/lab/workspaces/{name}/tree/{name}.ipynb?token={token}&reset")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=120_000)
    no_news = page.get_by_role("button", name="No", exact=True)
    if no_news.count():
        no_news.first.click()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()
    try:
        page.wait_for_selector(".jp-OutputArea-output .widget-image img, .jp-OutputArea-output img", timeout=180_000)
    except Exception:
        _shot(page, f"{name}_failed")
        raise
    page.wait_for_timeout(1500)
    return page


def _image_sources(page) -> list[str]:
    return page.eval_on_selector_all(".jp-OutputArea-output img", "els => els.map(e => e.src)")


def _shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _drive_slider(page, css_class="diffkit-t"):
    handle = page.locator(f".jp-OutputArea-output .{css_class} .noUi-handle").first
    handle.focus()
    for _ in range(3):
        page.keyboard.press("PageUp")
    page.keyboard.press("ArrowRight")


def _wait_changed(page, before, timeout=60_000):
    deadline = time.time() + timeout / 1000
    while time.time() < deadline:
        if _image_sources(page) != before:
            return True
        page.wait_for_timeout(250)
    return False


def test_schedule_explorer_in_jupyterlab(browser, lab):
    page = _open_and_run(browser, lab, "schedule")
    _shot(page, "schedule_before")
    before = _image_sources(page)
    _drive_slider(page)
    assert _wait_changed(page, before), "moving the t slider did not change the rendered images"
    _shot(page, "schedule_after")
    page.close()


def test_forward_chain_explorer_in_jupyterlab(browser, lab):
    page = _open_and_run(browser, lab, "forward")
    before = _image_sources(page)
    _drive_slider(page)
    assert _wait_changed(page, before), "moving the t slider did not change the image"
    before = _image_sources(page)
    page.get_by_role("button", name="one Markov step").click()
    assert _wait_changed(page, before), "the Markov step button did not change the image"
    _shot(page, "forward_chain")
    page.close()


def test_two_pixel_explorer_in_jupyterlab(browser, lab):
    page = _open_and_run(browser, lab, "two_pixel")
    before = _image_sources(page)
    page.get_by_role("button", name="one step").click()
    assert _wait_changed(page, before), "the one-step button did not change the plot"
    _shot(page, "two_pixel")
    page.close()


_SHA256 = """async el => {
    const data = await (await fetch(el.src)).arrayBuffer();
    const digest = await crypto.subtle.digest("SHA-256", data);
    return Array.from(new Uint8Array(digest)).map(b => b.toString(16).padStart(2, "0")).join("");
}"""

# whether an element's content overflows its box (cut off), for each of *texts* put in its place
_OVERFLOWS = """(el, texts) => {
    const box = el.querySelector(".widget-html-content");
    const kept = box ? box.innerHTML : null;
    const out = texts.map(t => {
        if (t !== null) box.innerHTML = t;
        return el.scrollHeight > el.clientHeight + 1 || el.scrollWidth > el.clientWidth + 1;
    });
    if (texts.some(t => t !== null)) box.innerHTML = kept;  // a title's own text back (null: nothing touched)
    return out;
}"""


def _longest_titles(language: str = "en") -> list[str]:
    """The x̂_0 panel's longest titles in *language*: the fast preview with a fitted map's error,
    pending or chosen."""
    from types import SimpleNamespace

    from diffkit.i18n import gettext as _
    from diffkit.i18n import set_language
    from diffkit.widgets.reverse_panels import image_titles

    rgb = SimpleNamespace(rms_error=0.0504)
    set_language(language)
    try:
        paused = _("decoding paused ({done} of {n}): move the slider").format(done=100, n=100)
        decoding = _("decoding: {done} of {n} steps done").format(done=100, n=100)
        return [
            image_titles("pending", rgb, paused)[1],
            image_titles("pending", rgb, decoding)[1],
            image_titles("fast", rgb)[1],
            image_titles("exact")[1],
        ]
    finally:
        set_language(None)


def test_reverse_chain_explorer_in_jupyterlab(browser, lab):
    page = _open_and_run(browser, lab, "reverse")
    page.get_by_text(f"done: {REVERSE_CALLS} U-Net calls").wait_for(timeout=120_000)
    expected = page.get_by_text("expected x0_hat")
    expected.wait_for(timeout=300_000)  # the second cell: every step decoded in the background
    want = dict(line.split()[1:] for line in expected.inner_text().splitlines() if line.startswith("expected"))
    page.set_viewport_size({"width": 1400, "height": 1500})  # the whole explorer, noise panels too
    page.wait_for_timeout(1000)
    before = _image_sources(page)
    _shot(page, "reverse_chain")  # the finished chain, at its last step (the README's picture)
    titles = page.locator(".jp-OutputArea-output .diffkit-title")
    assert titles.count() == 2
    assert all("exact VAE decode" in t for t in titles.all_inner_texts()), titles.all_inner_texts()
    # no title cut off, not even the longest the panels can show; the checkbox's label whole
    for i in range(2):
        assert titles.nth(i).evaluate(_OVERFLOWS, [None]) == [False], f"title {i} is cut off"
    assert titles.nth(1).evaluate(_OVERFLOWS, _longest_titles()) == [False] * 4, "a longer title would be cut off"
    label = page.locator(".jp-OutputArea-output .diffkit-exact").first
    assert label.evaluate(_OVERFLOWS, [None]) == [False] and "exact (VAE decode" in label.inner_text()
    assert label.locator("input").is_checked()  # the default: exact pictures
    # the constructor's arguments read back faithfully in the browser
    readout = page.locator(".jp-OutputArea-output .diffkit-steps .widget-readout").first
    assert readout.inner_text().strip() == str(REVERSE_STEPS), readout.inner_text()
    # the x_t and x̂_0 panels are classroom-sized (at least 256 screen pixels)
    widths = page.eval_on_selector_all(".jp-OutputArea-output img", "els => els.map(e => e.naturalWidth)")
    assert sum(w >= 256 for w in widths) >= 3, widths  # x_t, x̂_0 and the attention map
    handle = page.locator(".jp-OutputArea-output .diffkit-step .noUi-handle").first
    handle.focus()
    page.keyboard.press("Home")
    assert _wait_changed(page, before), "moving the step slider did not change the panels"
    # step 0 in the browser is the VAE's own picture: the PNG the kernel's library call makes, byte for byte
    for css, q in ((".diffkit-x-t", "x_t"), (".diffkit-x0", "x0_hat")):
        img = page.locator(f".jp-OutputArea-output img{css}").first
        deadline = time.time() + 30
        while img.evaluate(_SHA256) != want[q] and time.time() < deadline:
            page.wait_for_timeout(250)
        assert img.evaluate(_SHA256) == want[q], f"the {q} panel at step 0 is not the exact decode"
        assert img.evaluate("el => [el.naturalWidth, el.naturalHeight]") == [256, 256]
    assert all("exact VAE decode" in t for t in titles.all_inner_texts()), titles.all_inner_texts()
    assert label.locator("input").is_checked()
    _shot(page, "reverse_chain_first_step")
    page.close()


def test_reverse_chain_explorer_on_flux_in_jupyterlab(browser, lab):
    page = _open_and_run(browser, lab, "reverse_flux")
    page.get_by_text("done: 4 steps").wait_for(timeout=120_000)
    page.set_viewport_size({"width": 1400, "height": 1500})
    page.wait_for_timeout(1000)
    out = page.locator(".jp-OutputArea-output").first
    # the labels come from the records: v̂, and the guidance embedded in the one call
    assert "guidance embedded (w = 3.5)" in out.inner_text()
    assert "v̂ (with text, guidance embedded: one call)" in out.inner_text()
    before = _image_sources(page)
    _shot(page, "reverse_chain_flux")
    handle = page.locator(".jp-OutputArea-output .diffkit-step .noUi-handle").first
    handle.focus()
    page.keyboard.press("Home")
    assert _wait_changed(page, before), "moving the step slider did not change the panels"
    _shot(page, "reverse_chain_flux_first_step")
    page.close()


def test_reverse_chain_explorer_in_spanish_in_jupyterlab(browser, lab):
    page = _open_and_run(browser, lab, "reverse_es")
    page.get_by_text("hecho: 4 llamadas a la U-Net").wait_for(timeout=120_000)
    page.set_viewport_size({"width": 1400, "height": 1500})
    titles = page.locator(".jp-OutputArea-output .diffkit-title")
    deadline = time.time() + 120  # the exact decodes, made in the background after the run
    while not all("decodificación exacta del VAE" in t for t in titles.all_inner_texts()) and time.time() < deadline:
        page.wait_for_timeout(500)
    assert all("decodificación exacta del VAE" in t for t in titles.all_inner_texts()), titles.all_inner_texts()
    _shot(page, "reverse_chain_es")
    text = page.locator(".jp-OutputArea-output").first.inner_text()
    for label in ("Ejecutar", "Cancelar", "paso siguiente", "programador", "semilla", "x_t, los latentes con ruido"):
        assert label in text, label
    for label in ("instante t", "el modelo predice", "guía libre de clasificador", "(sin texto)", "palabra", "(paso)"):
        assert label in text, label
    assert "Run" not in [t.strip() for t in page.locator(".jp-OutputArea-output button").all_inner_texts()]
    # no Spanish title cut off, not even the longest the panels can show; the checkbox's label whole
    for i in range(2):
        assert titles.nth(i).evaluate(_OVERFLOWS, [None]) == [False], f"title {i} is cut off"
    assert titles.nth(1).evaluate(_OVERFLOWS, _longest_titles("es")) == [False] * 4, "a longer title would be cut off"
    label = page.locator(".jp-OutputArea-output .diffkit-exact").first
    assert label.evaluate(_OVERFLOWS, [None]) == [False] and "exacto (VAE" in label.inner_text()
    page.close()


def teardown_module():
    shutil.rmtree(Path.home() / ".cache" / "ms-playwright-diffkit", ignore_errors=True)
