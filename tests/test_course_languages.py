"""One source, two languages: the English and Spanish editions of the course share their code cells."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from diffkit.course import editions
from diffkit.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _md(text, lang, *tags):
    cell = new_markdown_cell(text)
    cell.metadata["tags"] = [*tags, f"lang-{lang}"]
    return cell


def _bilingual():
    answer_en = _md("**Answer: 42**, the sum.", "en", "answer")
    answer_es = _md("**Respuesta: 42**, la suma.", "es", "answer")
    for cell in (answer_en, answer_es):
        cell.metadata["jupyter"] = {"source_hidden": True}
    return new_notebook(
        cells=[
            _md("# Sums", "en"),
            _md("# Sumas", "es"),
            _md("**Predict.** What is printed?", "en"),
            _md("**Predice.** ¿Qué se imprime?", "es"),
            new_code_cell("guess = None  # ← your guess"),
            new_code_cell("print(40 + 2)", outputs=[new_output("stream", name="stdout", text="42\n")]),
            answer_en,
            answer_es,
        ]
    )


@pytest.mark.parametrize("lang", ["en", "es"])
def test_an_edition_keeps_its_prose_and_every_code_cell(lang):
    nb = _bilingual()
    edition = editions.language_edition(nb, lang)
    prose = [c.source for c in edition.cells if c.cell_type == "markdown"]
    assert prose == ([c.source for c in nb.cells if f"lang-{lang}" in c.metadata.get("tags", [])])
    assert [c for c in edition.cells if c.cell_type == "code"] == [c for c in nb.cells if c.cell_type == "code"]
    assert all(not t.startswith("lang-") for c in edition.cells for t in c.metadata.get("tags", []))
    assert edition.metadata["diffkit"]["language"] == lang
    assert editions.language_problems(nb) == []
    student = editions.student_notebook(edition, lang)
    text = "\n".join(c.source for c in student.cells)
    assert "42" not in text and editions.ANSWER_PLACEHOLDER[lang] in text


def test_an_unknown_language_is_refused_with_the_fix():
    with pytest.raises(InputError, match="not 'fr'; fix: --lang en or es"):
        editions.language_edition(_bilingual(), "fr")


def test_what_breaks_the_pairing_is_named():
    nb = _bilingual()
    nb.cells[3].metadata["tags"] = ["lang-es", "answer"]  # the Spanish question tagged as an answer
    del nb.cells[1]  # the Spanish title gone
    nb.cells.append(new_markdown_cell("An untagged note"))
    problems = editions.language_problems(nb)
    assert len(problems) == 3, problems
    assert "'# Sums'" in problems[0] and "not followed by its lang-es counterpart" in problems[0]
    assert "differ in tags or metadata" in problems[1]
    assert "no lang-en / lang-es tag" in problems[2]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_the_editions_of_every_notebook_share_their_code(path):
    nb = nbformat.read(path, as_version=4)
    en, es = (editions.language_edition(nb, lang) for lang in ("en", "es"))
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert [c.source for c in en.cells if c.cell_type == "code"] == code
    assert [c.source for c in es.cells if c.cell_type == "code"] == code
    assert len([c for c in en.cells if c.cell_type == "markdown"]) == len(
        [c for c in es.cells if c.cell_type == "markdown"]
    )


def test_the_spanish_teacher_edition_takes_the_spanish_run(tmp_path):
    src = tmp_path / "repo" / "notebooks"
    src.mkdir(parents=True)
    nbformat.write(_bilingual(), src / "01_sums.ipynb")
    ran = editions.language_edition(_bilingual(), "es")
    ran.cells[3].outputs = [new_output("stream", name="stdout", text="42 (en español)\n")]
    (tmp_path / "repo" / "out" / "notebooks" / "es").mkdir(parents=True)
    nbformat.write(ran, tmp_path / "repo" / "out" / "notebooks" / "es" / "01_sums.ipynb")
    editions.write_course(tmp_path / "course", notebooks=src, log=lambda s: None)
    es = nbformat.read(tmp_path / "course" / "teacher" / "es" / "01_sums.ipynb", as_version=4)
    en = nbformat.read(tmp_path / "course" / "teacher" / "en" / "01_sums.ipynb", as_version=4)
    assert es.cells[3].outputs[0]["text"] == "42 (en español)\n"
    assert en.cells[3].outputs[0]["text"] == "42\n" and en.cells[0].source == "# Sums"


@pytest.mark.parametrize("lang, page", [("en", "glossary.md"), ("es", "glossary.es.md")])
def test_the_tours_glossary_appendix_holds_the_docs_glossary(lang, page):
    """The glossary is written once for the docs; notebook 00's appendix carries the same rows
    (all but the notebooks' own markers, which would read as questions there)."""
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    rows = [line for line in text[: text.rindex("\n## ")].split("\n") if line.startswith("| ") and "---" not in line]
    tour = editions.language_edition(nbformat.read(ROOT / "notebooks" / "00_tour.ipynb", as_version=4), lang)
    appendix = next(c.source for c in tour.cells if "glossary-appendix" in c.metadata.get("tags", []))
    assert len(rows) > 30 and all(row in appendix for row in rows), [r for r in rows if r not in appendix][:3]
    assert "espacio latente" in appendix and "**Predict" not in appendix and "**Predice" not in appendix
