"""The student and teacher editions of the course, written from the one source in ``notebooks/``.

Two cell tags mark what a student must not read (add them in JupyterLab's property inspector,
or to the cell's ``metadata.tags``):

- ``answer``: a markdown cell that answers a predict-then-run question (it opens with
  ``**Answer: …**``). The student edition replaces its text up to its first heading with
  :data:`ANSWER_PLACEHOLDER`; a heading and what follows it stay, since they open the next
  section. An untagged markdown cell that opens with ``**Answer:`` is treated the same way, so
  a forgotten tag cannot leak an answer.
- ``solution``: a code cell that solves an exercise. The student edition keeps the cell's
  leading comment lines (the exercise's statement) and puts ``...  # ← your code here`` in
  place of the code; the cell is tagged ``exercise`` instead.

Every output and execution count is cleared in the student edition (a truth cell's output
prints the answer). The teacher edition is the notebooks as they are, with their outputs when
an executed copy (``out/notebooks/``, written by the notebook tests) is newer than the source
and has the same cells.

One source, two languages: every markdown cell is tagged ``lang-en`` and is followed by its
Spanish counterpart tagged ``lang-es`` (same other tags and metadata); code cells are shared.
:func:`language_edition` keeps one language's prose and every code cell, so the editions' code is
the same by construction; :func:`language_problems` lists what breaks the pairing (a test runs it
on every notebook). The Spanish markers are ``**Predice.**`` and ``**Respuesta: …**``. The editions
are written to ``<out>/{student,teacher}/{en,es}/``.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._files import atomic_write_text, checkout_root, ensure_folder
from ..i18n import LANGUAGES

__all__ = [
    "ANSWER_PLACEHOLDER",
    "SCAFFOLD",
    "course_notebooks",
    "is_answer",
    "language_edition",
    "language_problems",
    "student_notebook",
    "teacher_notebook",
    "write_course",
]

#: What replaces an answer in the student edition, per language.
ANSWER_PLACEHOLDER = {
    "en": "**Answer:** not in the student edition: run the cell above, compare with your guess, "
    "and check with your teacher (the teacher edition has it).",
    "es": "**Respuesta:** no está en la edición del alumnado: ejecuta la celda de arriba, compárala con tu "
    "predicción y coméntala con tu profesor o profesora (la edición docente la tiene).",
}
#: What replaces a solution's code in the student edition, per language.
SCAFFOLD = {"en": "...  # ← your code here", "es": "...  # ← tu código aquí"}
_ANSWER_START = re.compile(r"\A\s*\*\*(?:Answer|Respuesta):")
_HEADING = re.compile(r"^#{1,6} ", re.M)


def _source(cell: Any) -> str:
    src = cell.get("source", "")
    return src if isinstance(src, str) else "".join(src)


def _tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def is_answer(cell: Any) -> bool:
    """Whether *cell* is an answer: tagged ``answer``, or a markdown cell opening with ``**Answer:``."""
    if "answer" in _tags(cell):
        return True
    return cell.get("cell_type") == "markdown" and bool(_ANSWER_START.match(_source(cell)))


def _set_tags(cell: Any, drop: str, add: str | None = None) -> None:
    tags = [t for t in _tags(cell) if t != drop] + ([add] if add else [])
    if tags:
        cell.metadata["tags"] = tags
    else:
        cell.metadata.pop("tags", None)


def _language(cell: Any) -> str | None:
    found = [t[5:] for t in _tags(cell) if t.startswith("lang-")]
    return found[0] if found else None


def _check_language(language: str) -> None:
    if language not in LANGUAGES:
        from ..errors import InputError

        raise InputError(f"the course is written in {', '.join(LANGUAGES)}, not {language!r}; fix: --lang en or es")


def language_edition(nb: Any, language: str) -> Any:
    """A copy of the notebook *nb* with the prose of *language* only (markdown cells tagged
    ``lang-<language>``, or untagged) and every code cell, with their outputs; the ``lang-`` tags
    are dropped and ``metadata.diffkit.language`` says which edition it is."""
    _check_language(language)
    out = copy.deepcopy(nb)
    kept = []
    for cell in out.cells:
        lang = _language(cell)
        if lang not in (None, language):
            continue
        if lang is not None:
            _set_tags(cell, f"lang-{lang}")
        kept.append(cell)
    out.cells = kept
    out.metadata.setdefault("diffkit", {})["language"] = language
    return out


def language_problems(nb: Any) -> list[str]:
    """What breaks the one-source-two-languages rule in *nb*: a markdown cell without a ``lang-``
    tag, an English cell not followed by its Spanish counterpart, or a pair whose other tags or
    metadata differ. Empty when the notebook is bilingual."""
    problems = []
    cells = nb.cells
    for i, cell in enumerate(cells):
        if cell.cell_type != "markdown":
            continue
        lang = _language(cell)
        first = _source(cell).strip().split("\n")[0][:60]
        if lang is None:
            problems.append(f"cell {i} ({first!r}) has no lang-en / lang-es tag")
        elif lang == "en":
            nxt = cells[i + 1] if i + 1 < len(cells) else None
            if nxt is None or nxt.cell_type != "markdown" or _language(nxt) != "es":
                problems.append(f"cell {i} ({first!r}) is not followed by its lang-es counterpart")
                continue
            other = {k: v for k, v in cell.metadata.items() if k != "tags"}
            other_es = {k: v for k, v in nxt.metadata.items() if k != "tags"}
            same_tags = sorted(t for t in _tags(cell) if t != "lang-en") == sorted(
                t for t in _tags(nxt) if t != "lang-es"
            )
            if other != other_es or not same_tags:
                problems.append(f"cell {i} ({first!r}) and its Spanish counterpart differ in tags or metadata")
        elif lang == "es" and (i == 0 or _language(cells[i - 1]) != "en"):
            problems.append(f"cell {i} ({first!r}) is Spanish without an English cell before it")
    return problems


def student_notebook(nb: Any, language: str = "en") -> Any:
    """A copy of the notebook *nb* (nbformat 4) with answers and solutions removed and every output
    cleared (see the module's doc), the placeholders in *language*."""
    import nbformat

    out = copy.deepcopy(nb)
    cells = []
    for cell in out.cells:
        if is_answer(cell):
            text = _source(cell)
            heading = _HEADING.search(text)
            rest = text[heading.start() :] if heading else ""
            new = nbformat.v4.new_markdown_cell(ANSWER_PLACEHOLDER[language] + ("\n\n" + rest if rest else ""))
            new.metadata = copy.deepcopy(cell.metadata)
            _set_tags(new, "answer")
            cell = new
        elif cell.cell_type == "code" and "solution" in _tags(cell):
            lines = _source(cell).splitlines()
            keep = []
            for line in lines:
                if line.strip() and not line.lstrip().startswith("#"):
                    break
                keep.append(line)
            cell.source = "\n".join([*keep, SCAFFOLD[language]]).lstrip("\n")
            _set_tags(cell, "solution", "exercise")
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
        cells.append(cell)
    out.cells = cells
    out.metadata.pop("widgets", None)  # saved widget state would show the teacher's run
    return out


def _cells(nb: Any) -> list[tuple[str, str]]:
    return [(c.cell_type, _source(c)) for c in nb.cells]


def _current_run(executed: Path | None, source: Path, expected: Any) -> Any | None:
    """The executed copy *executed* when it exists, is not older than the notebook *source* and has
    the cells of *expected* (the source, or one language's edition of it), else None."""
    import nbformat

    if executed is None or not executed.is_file() or executed.stat().st_mtime < source.stat().st_mtime:
        return None
    ran = nbformat.read(executed, as_version=4)
    if _cells(ran) != _cells(expected):
        return None
    ran.metadata.pop("widgets", None)
    return ran


def teacher_notebook(source: Path, executed: Path | None) -> tuple[Any, str]:
    """The teacher's copy of the notebook *source*: its executed copy when *executed* exists, is
    newer than the source and has the same cells, else the source. Returns it and where it came from."""
    import nbformat

    nb = nbformat.read(source, as_version=4)
    ran = _current_run(executed, source, nb)
    if ran is not None:
        return ran, f"executed copy {executed}"
    return nb, "source (no executed copy newer than it with the same cells)"


def _own_run(path: Path, source: Any, executed: Path, language: str) -> Any | None:
    """The executed copy of *language*'s edition (the Spanish one, run with ``DIFFKIT_LANG=es``, is
    ``out/notebooks/es/``) when it is newer than the source and has the edition's cells, else None."""
    if language == "en":
        return None
    return _current_run(executed, path, language_edition(source, language))


def course_notebooks(folder: str | Path | None = None) -> list[Path]:
    """The course's notebooks, ``[0-9][0-9]_*.ipynb`` in *folder* (default: the checkout's ``notebooks/``)."""
    from ..errors import InputError

    if folder is None:
        root = checkout_root()
        if root is None:
            raise InputError(
                "the course's notebooks are in the repository, not in the installed package; "
                "fix: run this from a checkout of diffkit, or pass the notebooks' folder"
            )
        folder = root / "notebooks"
    paths = sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise InputError(f"no notebook named like 00_name.ipynb in {folder}; fix: pass the course's notebooks folder")
    return paths


_QUOTED = re.compile(r"""["']([^"'\n]+)["']""")


def _data_files(nb: Any, folder: Path) -> set[str]:
    """Files under *folder* a notebook's code names by a relative path in a string literal."""
    found = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for name in _QUOTED.findall(_source(cell)):
            p = Path(name)
            if not p.is_absolute() and ".." not in p.parts and (folder / p).is_file():
                found.add(p.as_posix())
    return found


def write_course(
    out: str | Path | None = None,
    *,
    executed: str | Path | None = None,
    notebooks: str | Path | None = None,
    languages: tuple[str, ...] | list[str] = LANGUAGES,
    log: Callable[[str], None] = print,
) -> dict[str, list[Path]]:
    """Write ``<out>/student/<lang>/`` and ``<out>/teacher/<lang>/`` for each of *languages*
    (default: English and Spanish), one copy of every course notebook in each.

    *out* defaults to the checkout's ``course/``; *notebooks* to its ``notebooks/``; *executed*
    (the executed copies) to ``out/notebooks/`` beside the notebooks' folder. A data file a
    notebook names by a path relative to its folder is copied beside every edition (none today:
    the notebooks read their pictures and specs from the package). Returns the paths written, by
    edition (``"student/es"``, …).
    """
    import nbformat

    for language in languages:
        _check_language(language)  # an unknown language fails before any write
    paths = course_notebooks(notebooks)
    folder = paths[0].parent
    if out is None:
        out = (checkout_root() or Path.cwd()) / "course"
    executed = Path(executed) if executed is not None else folder.parent / "out" / "notebooks"
    dirs = {
        f"{kind}/{lang}": ensure_folder(Path(out) / kind / lang)
        for kind in ("student", "teacher")
        for lang in languages
    }
    written: dict[str, list[Path]] = {k: [] for k in dirs}
    data: set[str] = set()
    for path in paths:
        teacher, origin = teacher_notebook(path, executed / path.name)
        source = nbformat.read(path, as_version=4)
        data |= _data_files(source, folder)
        for lang in languages:
            editions = {
                f"student/{lang}": student_notebook(language_edition(source, lang), lang),
                f"teacher/{lang}": _own_run(path, source, executed / lang / path.name, lang)
                or language_edition(teacher, lang),
            }
            for kind, nb in editions.items():
                nbformat.validate(nb)
                written[kind].append(atomic_write_text(dirs[kind] / path.name, nbformat.writes(nb) + "\n"))
        log(f"{path.name}: student and teacher editions in {', '.join(languages)}; teacher's from the {origin}")
    for name in sorted(data):
        for kind in written:
            target = dirs[kind] / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / name, target)
            written[kind].append(target)
        log(f"copied {name} beside every edition")
    for lang in languages:
        log(
            f"{lang}: student edition {os.fspath(dirs[f'student/{lang}'])}; "
            f"teacher edition {os.fspath(dirs[f'teacher/{lang}'])}"
        )
    return written
