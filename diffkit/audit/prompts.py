"""Prompt sets from a spec: templates × attribute lists, plus the control prompts.

Templates are format strings. ``{occupation}`` is the word itself and ``{a_occupation}``
the word with its indefinite article ("an electrician"); any attribute list in the spec
(``adjective``, ``activity``, …) gets the same pair. Control prompts also fill ``{gender}``
with each gender word of the spec ("a photo of a woman {occupation}").

Every image of the run is one cell of the (prompt k, image i) grid, and its seed is a
function of (spec seed, k, i) alone (:func:`derive_seed`), so any image can be regenerated
on its own, on any machine, in any order. Two published protocols seed otherwise, and a spec can
follow them (``audit.seeds``, :func:`image_seed`): Fair Diffusion counted seeds 0, 1, 2, … in every
prompt (``"counting"``), Unified Concept Editing gave each prompt one seed (a CSV).

Examples
--------
>>> article("electrician"), article("nurse")
('an electrician', 'a nurse')
>>> derive_seed(0, 0, 0) == derive_seed(0, 0, 0) != derive_seed(0, 0, 1)
True
"""

from __future__ import annotations

import hashlib
import itertools

import pandas as pd

from ._spec_language import template_languages
from ._spec_schema import AuditSpec, SpecError, template_fields

__all__ = ["article", "build_prompts", "derive_seed", "image_grid", "image_seed"]


def article(word: str) -> str:
    """``"an electrician"``, ``"a nurse"``: *word* with its indefinite article (by first letter)."""
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def derive_seed(seed: int, k: int, i: int) -> int:
    """The seed of image *i* of prompt *k*: the first 63 bits of sha256("diffkit-audit:seed:k:i")."""
    digest = hashlib.sha256(f"diffkit-audit:{int(seed)}:{int(k)}:{int(i)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def image_seed(spec: AuditSpec, k: int, i: int, prompt: str) -> int:
    """The seed of image *i* of prompt *k* under the spec's ``audit.seeds``: ``"derived"``
    (:func:`derive_seed`), ``"counting"`` (``audit.seed + i``) or a per-prompt table (the prompt's
    seed, the same for all its images; with ``audit.noise = "per_prompt"`` image *i* is the i-th of
    the batch of latents that seed draws)."""
    if spec.seeds == "counting":
        return int(spec.seed) + int(i)
    if spec.prompt_seeds:
        return int(spec.prompt_seeds[prompt])
    return derive_seed(spec.seed, k, i)


def _fill(template: str, values: dict[str, str]) -> str:
    full = dict(values)
    full.update({f"a_{k}": article(v) for k, v in values.items()})
    return template.format(**full)


def build_prompts(spec: AuditSpec) -> pd.DataFrame:
    """One row per prompt: the audit prompts, then the controls.

    Columns: ``prompt_id`` (k), ``kind`` (``"audit"`` or ``"control"``), ``template_id``,
    ``template``, ``language`` (the template's, ISO 639-1: ``prompts.language``, ``controls.language``), ``prompt``, ``occupation`` and any other attribute, ``stated_gender``
    (``"female"``/``"male"`` for controls, else missing), ``n_images`` and ``p_ref`` (the
    reference women-share of the occupation, when the spec has a reference table).
    """
    attrs = spec.prompts.attributes
    rows: list[dict] = []

    def add(kind: str, tid: int, template: str, lang: str, extra: dict[str, str], stated: str | None, n: int):
        used = [f[2:] if f.startswith("a_") else f for f in template_fields(template)]
        names = [a for a in attrs if a in used]
        for combo in itertools.product(*(attrs[a] for a in names)):
            values = dict(zip(names, combo)) | extra
            row = {"kind": kind, "template_id": tid, "template": template, "language": lang}
            row["prompt"] = _fill(template, values)
            row.update({a: values.get(a) for a in attrs})
            row["stated_gender"] = stated
            row["gender_word"] = extra.get("gender")
            row["n_images"] = n
            rows.append(row)

    p_lang = template_languages(spec.prompts.language, len(spec.prompts.templates))
    c_lang = template_languages(spec.controls.language, len(spec.controls.templates))
    for t_id, (t, lang) in enumerate(zip(spec.prompts.templates, p_lang)):
        add("audit", t_id, t, lang, {}, None, spec.images_per_prompt)
    for t_id, (t, lang) in enumerate(zip(spec.controls.templates, c_lang)):
        for g, words in spec.controls.gender_words.items():
            for w in words:
                add("control", t_id, t, lang, {"gender": w}, g, spec.controls.images_per_prompt)
    if not rows:
        raise SpecError(
            spec.source, "prompts.templates", "the prompt set is empty", "add at least one template and one occupation"
        )
    df = pd.DataFrame(rows)
    dup = df["prompt"][df["prompt"].duplicated()]
    if len(dup):
        raise SpecError(
            spec.source,
            "prompts.templates",
            f"the prompt {dup.iloc[0]!r} appears twice",
            "make templates and attribute lists distinct; each prompt is audited once",
        )
    df.insert(0, "prompt_id", range(len(df)))
    ref = spec.prompts.reference
    df["p_ref"] = df["occupation"].map(ref).astype(float) if ref else float("nan")
    return df


def image_grid(spec: AuditSpec, prompts: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per image to generate: ``prompt_id``, ``image_index``, ``prompt``, ``seed``, ``path``
    (relative to the run folder), in the order batches are formed."""
    prompts = build_prompts(spec) if prompts is None else prompts
    rows = [
        (int(k), i, p, image_seed(spec, int(k), i, p), f"images/{int(k):04d}/{i:04d}.png")
        for k, p, n in zip(prompts["prompt_id"], prompts["prompt"], prompts["n_images"])
        for i in range(int(n))
    ]
    return pd.DataFrame(rows, columns=["prompt_id", "image_index", "prompt", "seed", "path"])
