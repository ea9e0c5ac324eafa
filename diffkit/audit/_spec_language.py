"""The language prompt templates are written in: ``prompts.language`` and ``controls.language``.

A spec for a real model may hold templates in other languages than English (MAGBIG, Friedrich et
al. 2024, audits gender bias across languages): ``language = "es"`` for every template of the
table, or a list with one ISO 639-1 code per template, in the templates' order. The default is
``"en"``, so specs and run folders written before the key existed read as English. The language
is carried into the prompt table (:func:`~diffkit.audit.prompts.build_prompts`'s ``language``
column), the per-image and per-prompt tables, and the report, which labels each prompt's.

The language says what the templates are written in, not what the model understands:
diffkit-tiny, like Stable Diffusion 1.x's CLIP text encoder, was trained on English captions.
"""

from __future__ import annotations

from typing import Any

from ..i18n import N_
from ..i18n import gettext as _

__all__ = ["ISO_639_1", "check_language", "template_languages"]

#: The two-letter codes of ISO 639-1 (the language of a template).
ISO_639_1 = frozenset(
    """aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv
    dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii
    ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk
    ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc
    sd se sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve
    vi vo wa wo xh yi yo za zh zu""".split()
)

_FIX = N_(
    'give an ISO 639-1 code for all templates (language = "es") or a list with one code per template, '
    'in the templates\' order (language = ["en", "es"])'
)


def _one(value: Any) -> tuple[str | None, str, str]:
    """*value* as a lower-case ISO 639-1 code: ``(code, "", "")``, or ``(None, problem, fix)``."""
    if not isinstance(value, str):
        return None, _('expected a language code such as "es", got {type}').format(type=type(value).__name__), _(_FIX)
    code = value.strip().lower()
    if code in ISO_639_1:
        return code, "", ""
    head = code.replace("_", "-").split("-")[0]
    if head in ISO_639_1:  # "es-MX", "pt_BR": a region or script the template table does not keep
        return (
            None,
            _("{value!r} is not a two-letter ISO 639-1 code").format(value=value),
            _("write {code!r} (the language without its region)").format(code=head),
        )
    return (
        None,
        _("{value!r} is not an ISO 639-1 language code").format(value=value),
        _('use a two-letter code such as "en", "es", "de" or "fr"'),
    )


def check_language(value: Any, n_templates: int) -> tuple[str | tuple[str, ...] | None, str, str]:
    """The ``language`` of a table with *n_templates* templates, normalised: one code (str) when every
    template has the same, else one per template (tuple). Returns ``(language, "", "")``, or
    ``(None, problem, fix)`` for the caller to raise as a :class:`~diffkit.audit.spec.SpecError`."""
    if isinstance(value, (list, tuple)):
        if len(value) != n_templates:
            return (
                None,
                _("{n} language(s) for {templates} template(s)").format(n=len(value), templates=n_templates),
                _(_FIX),
            )
        codes = []
        for i, v in enumerate(value):
            code, problem, fix = _one(v)
            if code is None:
                return None, f"[{i}]: {problem}", fix
            codes.append(code)
        if not codes:
            return "en", "", ""
        return (codes[0] if len(set(codes)) == 1 else tuple(codes)), "", ""
    return _one(value)


def template_languages(language: str | tuple[str, ...] | list[str], n_templates: int) -> tuple[str, ...]:
    """One language per template: *language* repeated, or the list as it is."""
    if isinstance(language, str):
        return (language,) * n_templates
    return tuple(language)
