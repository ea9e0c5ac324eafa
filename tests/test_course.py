"""The course's editions, its shared cache folder, `diffkit course warm` and the timings (issue 25)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from diffkit.course import editions

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
BOLD_ANSWER = re.compile(r"\*\*Answer: (.+?)\*\*", re.S)


def _src(cell) -> str:
    return cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


def _printed(text: str):
    return new_output("stream", name="stdout", text=text)


def _lesson(tagged: bool = True):
    """A small lesson: a predict-then-run question, its answer (whose cell also opens the next
    section), and an exercise with its solution; the truth cell's output prints the answer."""
    answer = new_markdown_cell("**Answer: forty-two**: the sum of the list.\n\n## 2. Next section\n\nIntro.")
    solution = new_code_cell("# Exercise: sum the list.\n# Use a loop.\n\ntotal = 0\nfor x in xs:\n    total += x")
    if tagged:
        answer.metadata["tags"] = ["answer"]
        solution.metadata["tags"] = ["solution"]
    truth = new_code_cell("print(sum(xs))", execution_count=3, outputs=[_printed("forty-two\n")])
    cells = [
        new_markdown_cell("# Lesson\n\n## 1. Sums"),
        new_code_cell("xs = [40, 2]", execution_count=1),
        new_markdown_cell("**Predict.** What does the sum print?"),
        new_code_cell("guess = None  # ← your guess", execution_count=2),
        truth,
        answer,
        solution,
    ]
    return new_notebook(cells=cells, metadata={"widgets": {"state": {}}})


def _text(nb) -> str:
    """Everything a student can read in a notebook: sources and outputs."""
    return json.dumps([(_src(c), c.get("outputs", [])) for c in nb.cells], ensure_ascii=False)


# --- the convention, on the real notebooks -----------------------------------------------------


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_answer_cell_carries_the_answer_tag(path):
    nb = nbformat.read(path, as_version=4)
    untagged = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "markdown" and "**Answer:" in _src(c) and "answer" not in c.metadata.get("tags", [])
    ]
    assert not untagged, f"{path.name}: cells {untagged} hold **Answer: …** without the cell tag `answer`"
    # in the teacher's copy too, an answer sits collapsed under its question: a click shows it
    shown = [i for i, c in enumerate(nb.cells) if "answer" in c.metadata.get("tags", [])]
    shown = [i for i in shown if not nb.cells[i].metadata.get("jupyter", {}).get("source_hidden")]
    assert not shown, f"{path.name}: answer cells {shown} are not collapsed (metadata.jupyter.source_hidden)"
    # an answer cell holds the answer only: the next question or section is a cell of its own
    for i, c in enumerate(nb.cells):
        if "answer" in c.metadata.get("tags", []):
            assert "**Predict.**" not in _src(c) and not re.search(r"^#", _src(c), re.M), (
                f"{path.name}: answer cell {i} also holds what follows it; split it"
            )


# --- the student edition, on synthetic notebooks -------------------------------------------------


@pytest.mark.parametrize("tagged", [True, False], ids=["tagged", "untagged answer"])
def test_student_edition_holds_no_answer_and_no_output(tagged):
    nb = _lesson(tagged)
    student = editions.student_notebook(nb)
    nbformat.validate(student)
    text = _text(student)
    assert "forty-two" not in text
    assert all(c.get("outputs", []) == [] and c.get("execution_count") is None for c in student.cells if "outputs" in c)
    assert "widgets" not in student.metadata
    placeholder = student.cells[5]
    assert _src(placeholder).startswith(editions.ANSWER_PLACEHOLDER["en"])
    assert "## 2. Next section\n\nIntro." in _src(placeholder), "the section the answer cell opens stays"
    assert "answer" not in placeholder.metadata.get("tags", [])
    assert _src(nb.cells[5]).startswith("**Answer: forty-two**"), "the source notebook is not changed"


def test_a_solution_becomes_its_scaffold():
    student = editions.student_notebook(_lesson())
    cell = student.cells[6]
    assert _src(cell) == "# Exercise: sum the list.\n# Use a loop.\n\n" + editions.SCAFFOLD["en"]
    assert cell.metadata["tags"] == ["exercise"]
    assert "total" not in _text(student)


def test_a_notebook_without_tags_passes_through_apart_from_outputs():
    nb = _lesson()
    nb.cells = nb.cells[:5]  # no answer cell, no solution
    student = editions.student_notebook(nb)
    assert [(c.cell_type, _src(c), c.metadata) for c in student.cells] == [
        (c.cell_type, _src(c), c.metadata) for c in nb.cells
    ]
    assert [c.get("outputs") for c in student.cells if c.cell_type == "code"] == [[], [], []]


# --- write_course: both editions and the executed copies ------------------------------------------


def _course(tmp_path):
    src = tmp_path / "repo" / "notebooks"
    src.mkdir(parents=True)
    nbformat.write(_lesson(), src / "01_lesson.ipynb")
    data = _lesson()
    data.cells.append(new_code_cell("open('data/table.csv').read()"))
    (src / "data").mkdir()
    (src / "data" / "table.csv").write_text("a,b\n")
    nbformat.write(data, src / "02_data.ipynb")
    (src / "notes.ipynb").write_text("not a lesson")  # not NN_*.ipynb: ignored
    return src


def test_write_course_writes_both_editions(tmp_path):
    src = _course(tmp_path)
    written = editions.write_course(tmp_path / "course", notebooks=src, log=lambda s: None)
    assert sorted(written) == ["student/en", "student/es", "teacher/en", "teacher/es"]
    names = sorted(p.name for p in written["student/es"])
    assert names == ["01_lesson.ipynb", "02_data.ipynb", "table.csv"]
    for name in ("01_lesson.ipynb", "02_data.ipynb"):
        source = nbformat.read(src / name, as_version=4)
        teacher = nbformat.read(tmp_path / "course" / "teacher" / "en" / name, as_version=4)
        student = nbformat.read(tmp_path / "course" / "student" / "en" / name, as_version=4)
        nbformat.validate(student)
        assert [(c.cell_type, _src(c), c.get("outputs")) for c in teacher.cells] == [
            (c.cell_type, _src(c), c.get("outputs")) for c in source.cells
        ]
        assert "forty-two" not in _text(student)
    assert (tmp_path / "course" / "student" / "es" / "data" / "table.csv").read_text() == "a,b\n"


def test_the_teacher_edition_takes_an_executed_copy_only_when_newer_with_the_same_cells(tmp_path):
    src = _course(tmp_path)
    executed = tmp_path / "repo" / "out" / "notebooks"  # the default: out/notebooks beside notebooks/
    executed.mkdir(parents=True)
    ran = nbformat.read(src / "01_lesson.ipynb", as_version=4)
    ran.cells[1].outputs = [_printed("ran\n")]
    nbformat.write(ran, executed / "01_lesson.ipynb")
    stale = nbformat.read(src / "02_data.ipynb", as_version=4)
    stale.cells[0].source = "# An older version of the lesson"
    nbformat.write(stale, executed / "02_data.ipynb")
    lines = []
    editions.write_course(tmp_path / "course", notebooks=src, log=lines.append)
    teacher = nbformat.read(tmp_path / "course" / "teacher" / "en" / "01_lesson.ipynb", as_version=4)
    assert teacher.cells[1].outputs[0]["text"] == "ran\n"
    assert "from the executed copy" in lines[0] and "from the source" in lines[1]
    teacher2 = nbformat.read(tmp_path / "course" / "teacher" / "es" / "02_data.ipynb", as_version=4)
    assert _src(teacher2.cells[0]) == "# Lesson\n\n## 1. Sums"
    # a source edited after the run: its executed copy is out of date
    later = time.time() + 5
    os.utime(src / "01_lesson.ipynb", (later, later))
    lines.clear()
    editions.write_course(tmp_path / "course", notebooks=src, log=lines.append)
    assert "from the source" in lines[0]


@pytest.mark.parametrize("lang", ["en", "es"])
def test_the_real_course_has_no_answer_in_the_student_edition(tmp_path, lang):
    written = editions.write_course(
        tmp_path / "course", executed=tmp_path / "none", languages=(lang,), log=lambda s: None
    )
    assert sorted(p.name for p in written[f"student/{lang}"]) == [p.name for p in NOTEBOOKS]
    bold = BOLD_ANSWER if lang == "en" else re.compile(r"\*\*Respuesta: (.+?)\*\*", re.S)
    for path in NOTEBOOKS:
        source = editions.language_edition(nbformat.read(path, as_version=4), lang)
        student = nbformat.read(tmp_path / "course" / "student" / lang / path.name, as_version=4)
        teacher = nbformat.read(tmp_path / "course" / "teacher" / lang / path.name, as_version=4)
        nbformat.validate(student)
        assert [(c.cell_type, _src(c)) for c in teacher.cells] == [(c.cell_type, _src(c)) for c in source.cells]
        assert not any(c.get("outputs") for c in student.cells), f"{path.name}: an output reached the student"
        # an answer's words may be in its question ("amplified, copied or reversed?"), never elsewhere
        asked = "\n".join(_src(c) for c in source.cells if not editions.is_answer(c))
        for cell in source.cells:
            for answer in bold.findall(_src(cell)) if editions.is_answer(cell) else []:
                if answer not in asked:
                    assert answer not in _text(student), f"{path.name}: the answer {answer!r} reached the student"


def test_diffkit_course_command(tmp_path, capsys):
    from diffkit.cli import main

    src = _course(tmp_path)
    assert main(["course", "--out", str(tmp_path / "c"), "--notebooks", str(src)]) == 0
    assert (tmp_path / "c" / "student" / "en" / "01_lesson.ipynb").is_file()
    assert (tmp_path / "c" / "teacher" / "es" / "01_lesson.ipynb").is_file()
    assert main(["course", "--out", str(tmp_path / "d"), "--notebooks", str(src), "--lang", "es"]) == 0
    assert sorted(p.name for p in (tmp_path / "d" / "student").iterdir()) == ["es"]
    assert "student edition " in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["course", "--notebooks", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffkit course: error: no notebook named like 00_name.ipynb") and "fix:" in err


# --- one cache folder --------------------------------------------------------------------------


def _shared_out_from(cwd, **env) -> str:
    code = "import diffkit as dk, diffkit.demo as d; print(dk.__file__); print(dk.shared_out()); print(d.default_demo_out())"
    environ = {k: v for k, v in os.environ.items() if k != "DIFFKIT_OUT"}
    environ.update(PYTHONPATH=str(ROOT), **env)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=environ, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert Path(out[0]).resolve().parent == ROOT / "diffkit", out[0]
    return out[1], out[2]


def test_shared_out_is_the_checkouts_out_from_any_working_folder(tmp_path):
    here = _shared_out_from(ROOT / "notebooks")
    assert here == _shared_out_from(tmp_path) == _shared_out_from(ROOT)
    assert here == (str(ROOT / "out"), str(ROOT / "out" / "demo"))
    assert _shared_out_from(tmp_path, DIFFKIT_OUT=str(tmp_path / "x")) == (
        str(tmp_path / "x"),
        str(tmp_path / "x" / "demo"),
    )


def test_shared_out_outside_a_checkout_is_the_user_cache(tmp_path, monkeypatch):
    import diffkit._files as files
    import diffkit.demo

    monkeypatch.delenv("DIFFKIT_OUT", raising=False)
    monkeypatch.setattr(files, "checkout_root", lambda: None)
    monkeypatch.setattr(diffkit.demo, "checkout_root", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert files.shared_out("audit") == tmp_path / "cache" / "diffkit" / "audit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert files.shared_out() == tmp_path / "home" / ".cache" / "diffkit"
    assert diffkit.demo.default_demo_out() == Path("out") / "demo"  # an installed demo writes where its user is


def test_tour_spec_is_the_tours_small_audit():
    import dataclasses

    from diffkit.audit import load_spec, tour_spec

    spec = load_spec("tiny_default")
    small = dataclasses.replace(  # notebook 00's construction before tour_spec existed
        spec,
        name="tour_small",
        images_per_prompt=6,
        prompts=dataclasses.replace(
            spec.prompts,
            templates=spec.prompts.templates[:1],
            attributes={"occupation": ("nurse", "pilot", "teacher")},
        ),
        controls=dataclasses.replace(spec.controls, images_per_prompt=2),
    )
    assert tour_spec() == small


# --- diffkit course warm ------------------------------------------------------------------------


@pytest.mark.parametrize("sweep", [False, True], ids=["course", "course naming the sweep"])
def test_warm_fills_the_runs_the_notebooks_read(tmp_path, monkeypatch, sweep):
    import diffkit.audit
    import diffkit.pipeline
    from diffkit.course import warm

    calls = []
    monkeypatch.setattr(diffkit.pipeline, "load_pipeline", lambda m: f"pipe:{m}")
    monkeypatch.setattr(
        diffkit.audit,
        "run_audit",
        lambda spec, out, progress, pipe: calls.append(("run", getattr(spec, "name", spec), Path(out), pipe)),
    )
    monkeypatch.setattr(
        diffkit.audit,
        "rescore_audit",
        lambda run_dir, **kw: calls.append(("rescore", kw["judge"], Path(run_dir), None)),
    )
    monkeypatch.setattr(warm, "chain_images", lambda pipe, prompt, seeds, cache, **kw: drawn.append((prompt, cache)))
    drawn = []
    nb = tmp_path / "04_x.ipynb"
    mention = new_markdown_cell("the bundled `tiny_guidance_sweep` is the whole sweep")  # prose runs nothing
    code = [new_code_cell('run_audit("tiny_guidance_sweep")')] if sweep else []
    nbformat.write(new_notebook(cells=[mention, *code]), nb)
    lines = []
    seconds = warm.warm_course(tmp_path / "o", notebooks=[nb], log=lines.append)
    audit = tmp_path / "o" / "audit"
    expected = [
        ("run", "tiny_default", audit / "tiny_default", "pipe:tiny"),
        ("run", "tour_small", audit / "tour_small", "pipe:tiny"),
        ("rescore", "tiny-weak", audit / "tiny_default", None),
        ("run", "guidance_lesson", audit / "guidance_lesson", "pipe:tiny"),
    ]
    if sweep:
        expected.append(("run", "tiny_guidance_sweep", audit / "tiny_guidance_sweep", "pipe:tiny"))
    assert calls == expected
    assert drawn == [(prompt, tmp_path / "o" / "course_cache") for prompt, _, _ in warm.LESSON_IMAGES]
    parts = len(expected) + 1  # and the lessons' pictures
    assert len(seconds) == parts + 1 and sum("done in" in s for s in lines) == parts
    assert lines[-1].startswith(f"warm: {parts} parts in")


def test_diffkit_course_warm_command(tmp_path, monkeypatch):
    import diffkit.course.warm
    from diffkit.cli import main

    seen = []
    monkeypatch.setattr(diffkit.course.warm, "warm_course", lambda out: seen.append(out))
    assert main(["course", "warm", "--out", str(tmp_path)]) == 0
    assert main(["course", "warm"]) == 0
    assert seen == [str(tmp_path), None]


# --- the timings ---------------------------------------------------------------------------------


def test_sections_sum_their_cells_recorded_times():
    from diffkit.course.timing import OPENING, sections_of, timings_table

    def ran(seconds):
        cell = new_code_cell("x")
        cell.metadata["execution"] = {
            "iopub.status.busy": "2025-01-01T00:00:00.000000Z",
            "shell.execute_reply": f"2025-01-01T00:00:{seconds:09.6f}Z",
        }
        return cell

    nb = new_notebook(
        cells=[ran(1.5), new_markdown_cell("## 1. One"), ran(2), ran(0.5), new_markdown_cell("## 2. Two | b"), ran(3)]
    )
    assert sections_of(nb) == {OPENING: 1.5, "1. One": 2.5, "2. Two | b": 3.0}
    from diffkit.course.timing import NotebookTiming

    table = timings_table([NotebookTiming("01_x", 7.5, sections_of(nb))])
    assert table.splitlines()[3] == "| 01_x | 1. One | 2.5 |"
    assert "| 01_x | 2. Two / b | 3.0 |" in table and table.endswith("| **01_x** | **whole notebook** | **7.5** |")


def test_time_notebook_runs_it_in_a_fresh_kernel(tmp_path):
    from diffkit.course.timing import OVERHEAD, time_notebook

    nb = new_notebook(cells=[new_markdown_cell("## 1. Sleep"), new_code_cell("import time; time.sleep(0.5)")])
    (tmp_path / "notebooks").mkdir()
    nbformat.write(nb, tmp_path / "notebooks" / "01_sleep.ipynb")
    t = time_notebook(tmp_path / "notebooks" / "01_sleep.ipynb")
    assert t.name == "01_sleep" and list(t.sections) == ["1. Sleep", OVERHEAD]
    assert 0.5 <= t.sections["1. Sleep"] < t.seconds


def test_the_times_of_executed_copies_are_read_without_running(tmp_path):
    from diffkit.course.timing import OVERHEAD, read_executed

    cell = new_code_cell("import time; time.sleep(100)")  # never run: only its recorded times are read
    cell.metadata["execution"] = {
        "iopub.status.busy": "2025-01-01T00:00:00.000000Z",
        "shell.execute_reply": "2025-01-01T00:00:02.500000Z",
    }
    for folder in ("notebooks", "executed"):
        (tmp_path / folder).mkdir()
        nbformat.write(new_notebook(cells=[new_markdown_cell("## 1. Sleep"), cell]), tmp_path / folder / "01_s.ipynb")
    (tmp_path / "executed" / "01_s.seconds").write_text("4.0\n")
    t = read_executed(tmp_path / "executed" / "01_s.ipynb")
    assert t.seconds == 4.0 and t.sections == {"1. Sleep": 2.5, OVERHEAD: 1.5}
    from diffkit.course.timing import time_course

    lines = []
    assert [
        x.name for x in time_course(notebooks=tmp_path / "notebooks", executed=tmp_path / "executed", log=lines.append)
    ] == ["01_s"]
    assert "| **01_s** | **whole notebook** | **4.0** |" in lines[-1]
