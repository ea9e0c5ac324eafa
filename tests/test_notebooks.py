"""Every notebook of the course runs top to bottom, offline, and the docs build strictly."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXECUTED = ROOT / "out" / "notebooks"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    if path.stem == "00_tour":  # the tour must run cold within the bar: no audit left by an earlier run
        shutil.rmtree(ROOT / "out" / "audit" / "tour_small", ignore_errors=True)
    t0 = time.perf_counter()
    # run from notebooks/, as JupyterLab runs a notebook (its folder is the working directory): the
    # runs the course shares with `make demo` must be found from there (dk.shared_out)
    here = {"metadata": {"path": str(path.parent)}}
    NotebookClient(nb, timeout=600, kernel_name="python3", resources=here).execute()
    seconds = time.perf_counter() - t0
    # every lesson draws figures; they must reach the page as pictures, not as "<Figure size …>"
    kinds = {k for c in nb.cells for o in c.get("outputs", []) for k in o.get("data", {})}
    assert "image/png" in kinds, f"{path.name} displayed no picture"
    for lang in ("en", "es"):  # the code is shared: both editions' answers quote what it printed
        assert_answers_printed(nb, lang, path.name)
    EXECUTED.mkdir(parents=True, exist_ok=True)
    # the saved widget state would make the docs site load the widget renderer from a CDN; the
    # explorers need a kernel anyway, so the site shows the figures and not the widgets
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, EXECUTED / path.name)
    (EXECUTED / f"{path.stem}.seconds").write_text(f"{seconds:.1f}\n")
    print(f"{path.name}: {seconds:.1f} s")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_spanish_edition_runs(path, tmp_path):
    """The Spanish edition as a student gets it (course/teacher/es/), run in a kernel where diffkit
    speaks Spanish (DIFFKIT_LANG=es): it runs top to bottom and its answers quote what it printed."""
    import nbformat
    from nbclient import NotebookClient

    from diffkit.course import language_edition

    nb = language_edition(nbformat.read(path, as_version=4), "es")
    assert not any("lang-en" in c.metadata.get("tags", []) for c in nb.cells)
    folder = tmp_path / "es"  # the edition's own folder, as a teacher hands it out
    folder.mkdir()
    env = {**os.environ, "DIFFKIT_LANG": "es"}
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute(
        env=env
    )
    seconds = time.perf_counter() - t0
    kinds = {k for c in nb.cells for o in c.get("outputs", []) for k in o.get("data", {})}
    assert "image/png" in kinds, f"{path.name} (es) displayed no picture"
    assert len(assert_answers_printed(nb, "es", path.name)) >= 3
    (EXECUTED / "es").mkdir(parents=True, exist_ok=True)
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, EXECUTED / "es" / path.name)
    print(f"{path.name} (es): {seconds:.1f} s")


PREDICT = {"en": "**Predict.**", "es": "**Predice.**"}
ANSWER = {"en": re.compile(r"\*\*Answer: (.+?)\*\*", re.S), "es": re.compile(r"\*\*Respuesta: (.+?)\*\*", re.S)}


def _src(cell) -> str:
    return cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


def cell_text(cell) -> str:
    """The text a code cell printed (streams and plain-text results)."""
    out = []
    for o in cell.get("outputs", []):
        t = o.get("text") or o.get("data", {}).get("text/plain") or ""
        out.append(t if isinstance(t, str) else "".join(t))
    return "".join(out)


def assert_answers_printed(nb, lang, name):
    """Every written answer of the *lang* edition of the executed *nb* appears in what its truth
    cell printed; returns the (question, truth, answer) triples checked."""
    answers = predict_answers(nb, lang)
    for question, truth, answer in answers:
        printed = cell_text(truth)
        assert answer in printed, (
            f"{name} ({lang}): the written answer {answer!r} to {question!r} is not what the code printed:"
            f"\n{printed[-800:]}\nupdate the answer in the notebook (or find why the code changed)"
        )
    return answers


def predict_answers(nb, lang="en"):
    """(question, truth cell, written answer) per predict-then-run question of the *lang* edition.

    The pattern: a markdown cell with **Predict.** (Spanish: **Predice.**), a code cell where the
    student writes a guess (``guess… = None``), a code cell that computes the truth, and a markdown
    cell opening with **Answer: …** (**Respuesta: …**; the bold text must appear in what the truth
    cell printed).
    """
    from diffkit.course import language_edition

    cells = language_edition(nb, lang)["cells"]
    found = []
    for i, c in enumerate(cells):
        if c["cell_type"] != "markdown" or PREDICT[lang] not in _src(c):
            continue
        question = _src(c).split(PREDICT[lang], 1)[1].strip().split("\n")[0][:80]
        guess, truth, answer = cells[i + 1], cells[i + 2], cells[i + 3]
        assert guess["cell_type"] == "code" and re.search(r"^guess\w* = None", _src(guess), re.M), (
            f"after {question!r} comes a cell for the student's guess: `guess_… = None  # ← your guess`"
        )
        assert truth["cell_type"] == "code", f"after the guess for {question!r} comes the cell that computes the truth"
        m = ANSWER[lang].search(_src(answer)) if answer["cell_type"] == "markdown" else None
        assert m, f"after the truth for {question!r} comes a markdown cell with {ANSWER[lang].pattern}"
        found.append((question, truth, m.group(1).strip()))
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_three_predict_then_run_questions(path):
    import nbformat

    from diffkit.course import language_problems

    nb = nbformat.read(path, as_version=4)
    assert not language_problems(nb), f"{path.name}: " + "; ".join(language_problems(nb))
    for lang in ("en", "es"):
        assert len(predict_answers(nb, lang)) >= 3, (
            f"{path.name} ({lang}): give at least three predict-then-run questions"
        )


def _sources(name: str) -> str:
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    return "\n".join(_src(c) for c in nb.cells)


def test_model_facts_are_read_from_the_model():
    """Labels that depend on the model come from its config, never from prose written for another model."""
    course = {p.name: _sources(p.name) for p in NOTEBOOKS}
    course["concepts.md"] = (ROOT / "docs" / "concepts.md").read_text()
    for name, text in course.items():
        # the token limit: 77 on SD's CLIP (and diffkit-tiny 2), 32 on diffkit-tiny 1: a hub model may
        # have another, so labels read pipe.tokenizer.model_max_length and prose names SD's figure as SD's
        assert not re.search(r"\b77\b(?!\s+(?:for|en|de)\s+Stable\s+Diffusion)", text), (
            f"{name} hard-codes SD's 77-token limit"
        )
        # ε or v depends on the model loaded (diffkit-tiny 2 and SD 1.x: ε; diffkit-tiny 1, SD 2.x 768: v)
        assert "predicts the noise" not in text and "predict the noise" not in text, (
            f"{name} says the U-Net predicts the noise; say what prediction_type says"
        )
        # the written answers are measured on the model that ships, not on an earlier one
        stale = re.search(r"\*\*Answer: [^*]+\*\*[^.]{0,40}diffkit-tiny 1", text)
        assert not stale, f"{name} credits a written answer to diffkit-tiny 1: {stale.group(0)!r}; re-measure it"
    for name in ("02_the_reverse_chain.ipynb", "04_text_conditioning.ipynb"):
        assert "prediction_type" in course[name], f"{name} must read pipe.scheduler.config.prediction_type"
    assert "model_max_length" in course["04_text_conditioning.ipynb"]
    # hand checks against the records promise identity: float32 records and exact equality
    text02 = course["02_the_reverse_chain.ipynb"]
    assert "record_dtype=torch.float32" in text02 and "assert_array_equal" in text02
    assert "largest difference to the scheduler" not in text02
    # the fast preview hides the denoising on diffkit-tiny: the step-by-step pictures are exact decodes
    for name in ("00_tour.ipynb", "02_the_reverse_chain.ipynb"):
        assert 'preview(k, "x_t", "fast")' not in course[name] and 'preview(k, "x_t", "exact")' in course[name]
        assert "latent_rgb.source" in course[name], f"{name}: say what the fast preview is and its error"
    # cross-attention maps: the first content word, one colour scale with a colour bar
    text03 = course["04_text_conditioning.ipynb"]
    assert "first_content_position" in text03 and "colorbar" in text03 and "vmax=vmax" in text03
    assert "which pixels each word looked at" not in text03


def test_schedule_words_agree_across_course_docs_and_code():
    """√ᾱ_t is the signal's scale, ᾱ_t its share of the variance: one wording everywhere; sources credited once."""
    from diffkit import plots, schedules

    texts = {p.name: _sources(p.name) for p in NOTEBOOKS}
    texts["concepts.md"] = (ROOT / "docs" / "concepts.md").read_text()
    texts["schedules.py"] = schedules.__doc__ + schedules.cosine_betas.__doc__ + schedules.sigmoid_betas.__doc__
    for name, text in texts.items():
        assert "signal kept" not in text, f"{name}: say 'signal scale' (√ᾱ_t) or 'share of the variance' (ᾱ_t)"
        assert "Jabri" not in text, f"{name}: diffkit's sigmoid schedule is GeoDiff's, as diffusers implements it"
    assert "share of the variance" in texts["concepts.md"] and "scale" in texts["concepts.md"]
    assert "share of the variance" in plots._QUANTITIES["alpha_bar"]
    # Nichol & Dhariwal eq. 17 normalises by f(0)
    assert "f(0)" in texts["concepts.md"] and "f(0)" in schedules.cosine_betas.__doc__
    # diffusers' laplace is not Hang et al.'s curve, with the figures the notebook computes
    s = schedules.get_schedule("laplace")
    figures = f"{s.log_snr[499]:.2f}", f"{s.log_snr[0]:.1f}", f"{s.log_snr[-1]:.1f}".replace("-", "−")
    for f in figures:
        assert f in texts["concepts.md"], f"concepts.md should give diffusers' laplace figure {f}"


def _site_notebooks(dest: Path, course: Path) -> None:
    """What `make docs` puts in docs/notebooks/: `diffkit course` writes the teacher editions (executed
    copies from out/notebooks/ when current), English as NN_name.ipynb and Spanish as NN_name.es.ipynb."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "diffkit", "course", "--out", str(course)], check=True, env=env, cwd=ROOT)
    for lang in ("en", "es"):
        assert (course / "teacher" / lang).is_dir(), f"`diffkit course` wrote no teacher/{lang}/ edition"
    dest.mkdir(parents=True, exist_ok=True)
    for nb in NOTEBOOKS:
        shutil.copy(course / "teacher" / "en" / nb.name, dest / nb.name)
        shutil.copy(course / "teacher" / "es" / nb.name, dest / f"{nb.stem}.es.ipynb")


def _title(notebook: Path) -> str:
    import nbformat

    first = next(c for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "markdown")
    return first.source.splitlines()[0].lstrip("# ").strip()


@pytest.mark.slow
def test_docs_build_strictly(tmp_path):
    """mkdocs build --strict in English and Spanish, with the executed notebooks (from the tests above)
    rendered in each language; a language switcher links the two; nothing is loaded from elsewhere."""
    import html

    pytest.importorskip("mkdocs")
    site_src, site = tmp_path / "src", tmp_path / "site"
    shutil.copytree(ROOT / "docs", site_src / "docs")
    shutil.rmtree(site_src / "docs" / "notebooks", ignore_errors=True)
    for name in ("mkdocs.yml", "mkdocs_hooks.py"):
        shutil.copy(ROOT / name, site_src / name)
    _site_notebooks(site_src / "docs" / "notebooks", tmp_path / "course")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(site_src / "mkdocs.yml"), "-d", str(site)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # both languages, each home page linking the other through Material's language switcher
    switcher = re.compile(r'<a href="([^"]*)" hreflang="(\w+)" class="md-select__link"')
    for page, lang, other, other_home in (("index.html", "en", "es", "es"), ("es/index.html", "es", "en", ".")):
        text = (site / page).read_text()
        assert f'<html lang="{lang}"' in text, page
        links = dict((code, href) for href, code in switcher.findall(text))
        assert other in links, f"{page}: no language switcher link to {other}: {links}"
        target = os.path.normpath(os.path.join(os.path.dirname(page), links[other]))
        assert target == other_home, f"{page}: the {other} link goes to {links[other]!r}"
    # every notebook is a rendered page in both languages (not its JSON copied as a file), in its language
    for nb in NOTEBOOKS:
        en = (site / "notebooks" / nb.stem / "index.html").read_text()
        es = (site / "es" / "notebooks" / nb.stem / "index.html").read_text()
        assert en.lstrip().lower().startswith("<!doctype html>") and '<html lang="en"' in en, nb.name
        assert es.lstrip().lower().startswith("<!doctype html>") and '<html lang="es"' in es, nb.name
        title_es = html.escape(_title(site_src / "docs" / "notebooks" / f"{nb.stem}.es.ipynb"), quote=False)
        title_en = html.escape(_title(site_src / "docs" / "notebooks" / nb.name), quote=False)
        assert title_es in es and title_en in en, f"{nb.name}: {title_en!r} / {title_es!r} not on their pages"
    # offline classrooms and school networks: the site loads nothing from elsewhere, in either language
    external = [
        re.compile(r"""\bsrc\s*=\s*["']?(?:https?:)?//[^"'\s>]+""", re.I),  # a script, an image, a frame
        re.compile(r"""\bhref\s*=\s*["']?(?:https?:)?//[^"'\s>]+\.(?:js|css|woff2?|ttf)\b""", re.I),
        re.compile(r"""url\(\s*["']?(?:https?:)?//[^"')\s]+""", re.I),  # a stylesheet's font or image
        re.compile(r"fonts\.(?:googleapis|gstatic)\.com"),
    ]
    found = {}
    for page in site.rglob("*.html"):
        text = page.read_text(errors="replace")
        hits = [hit for pattern in external for hit in pattern.findall(text)]
        if hits:
            found[str(page.relative_to(site))] = sorted(set(hits))[:3]
    assert not found, found


def test_the_attention_demo_draws_the_object_its_text_names():
    """04 §2 reads the word "circle"'s map over the picture: the seed it runs must draw a circle
    (seed 0 draws a square with the default sampler, and the text would describe a picture it is not)."""
    import diffkit as dk
    from diffkit.tiny import oracle

    text = _sources("04_text_conditioning.ipynb")
    seed = int(re.search(r"^ATTN_SEED = (\d+)", text, re.M).group(1))
    assert "seed=ATTN_SEED" in text and 'PROMPT = "a red circle" if MODEL == "tiny"' in text
    pipe = dk.load_pipeline("tiny")
    traj = dk.ReverseChain(pipe, "a red circle", steps=20, seed=seed, height=128, width=128).run()
    drawn = oracle.read(traj.image)
    assert (drawn.color, drawn.shape) == ("red", "circle"), drawn


def test_img2img_titles_count_steps_as_diffusers_does():
    """04 §4: with steps=20 diffusers' img2img runs int(20·s) steps; the U-Net calls are said apart."""
    text = _sources("04_text_conditioning.ipynb")
    assert "{int(20 * s)} steps" in text and "U-Net calls" in text
    assert 'f"strength {s}: {len(t)} steps"' not in text
