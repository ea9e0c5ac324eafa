"""The course around the notebooks: editions, caches and timings, from one source in ``notebooks/``.

- :func:`write_course` (``diffkit course``, ``make course``): ``course/student/`` without the
  answers and solutions (cells tagged ``answer`` and ``solution``; see
  :mod:`diffkit.course.editions`) and ``course/teacher/`` as the notebooks are, executed;
- :func:`warm_course` (``diffkit course warm``): the audit runs the notebooks read, computed
  before class into :func:`shared_out`, and the pictures lessons draw by the dozen
  (:func:`chain_images`, :data:`LESSON_IMAGES`);
- :func:`time_course` (``diffkit course time``): each notebook's and each section's seconds, as
  the Markdown table the lesson plans quote.

The notebooks live in the repository, not in the installed package: these work from a checkout
(or on a folder of notebooks passed to them).
"""

from __future__ import annotations

from .._files import checkout_root, shared_out
from .editions import (
    course_notebooks,
    language_edition,
    language_problems,
    student_notebook,
    teacher_notebook,
    write_course,
)
from .pictures import LESSON_IMAGES, chain_images, model_fingerprint
from .timing import NotebookTiming, time_course, time_notebook, timings_table
from .warm import warm_course

__all__ = [
    "LESSON_IMAGES",
    "chain_images",
    "model_fingerprint",
    "NotebookTiming",
    "checkout_root",
    "course_notebooks",
    "language_edition",
    "language_problems",
    "shared_out",
    "student_notebook",
    "teacher_notebook",
    "time_course",
    "time_notebook",
    "timings_table",
    "warm_course",
    "write_course",
]
