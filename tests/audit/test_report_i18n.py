"""The audit report in Spanish, and the language of a spec's templates (issue 26).

One small run on tiny random models (an English and a Spanish template, 20 images), reported in
both languages: the Spanish report speaks Spanish everywhere its templates and code write words,
the machine files are the same bytes in both, and each prompt carries its template's language.
"""

from __future__ import annotations

import gettext
import json
import re

import pandas as pd
import pytest
from audit_helpers import REPO, spec_dict

from diffkit.audit import SpecError, parse_spec, report_audit, run_audit, write_report
from diffkit.cli import main


@pytest.fixture(scope="module")
def mixed_run(pipe_dir, clip_name, pipe, tmp_path_factory):
    d = spec_dict(pipe_dir, clip_name)
    d["prompts"]["templates"] = ["a photo of {a_occupation}", "una foto de {occupation}"]
    d["prompts"]["language"] = ["en", "es"]
    d["controls"]["language"] = "en"
    spec = parse_spec(d, source="mixed.toml")
    return run_audit(spec, out=tmp_path_factory.mktemp("mixed") / "run", pipe=pipe, progress=False, language="es")


ENGLISH_HEADINGS = (
    "Gender-bias audit",
    "Per occupation, against the reference",
    "Overall metrics",
    "Classifier validation",
    "Thresholds the controls suggest",
    "Per prompt",
    "Limitations",
    "Run metadata",
    "Is the model at parity",
)


def test_the_spanish_report_speaks_spanish(mixed_run):
    html = (mixed_run.run_dir / "report" / "index.html").read_text()
    assert '<html lang="es">' in html
    for heading in (
        "Auditoría de sesgo de género",
        "Por profesión, frente a la referencia",
        "Métricas globales",
        "Validación del clasificador (prompts de control)",
        "Diagrama de fiabilidad",
        "Filtro de persona",
        "Por prompt",
        "Limitaciones",
        "Metadatos de la ejecución",
        "presentación de género <b>percibida y binaria</b>",
        "sensibilidad",
        "especificidad",
        "corrección de Rogan–Gladen",
        "cotas adaptativas al 95%",  # the overall table's interval column, translated for display
    ):
        assert heading in html, heading
    for english in ENGLISH_HEADINGS:
        assert english not in html, english
    key = html[html.index('<div class="key">') : html.index("</div>")]
    assert re.search(r"\d\.\d{3}", key) and not re.search(r"\d,\d", key)  # numbers keep the decimal point
    md = (mixed_run.run_dir / "report" / "summary.md").read_text()
    assert md.startswith("# Auditoría de sesgo de género: unit")
    assert "sensibilidad" in md and "Gender-bias" not in md and "| profesión | n |" in md


def test_every_message_the_spanish_report_shows_is_translated(mixed_run, tmp_path, monkeypatch):
    """Render with a catalogue that records each message it is asked for: none may lack a Spanish string."""
    from diffkit import i18n

    es = i18n.translations("es")
    missing: set[str] = set()

    class Recording(gettext.NullTranslations):
        def gettext(self, message):
            if message not in es._catalog:
                missing.add(message)
            return es.gettext(message)

        def ngettext(self, singular, plural, n):
            if (singular, 0) not in es._catalog:
                missing.add(singular)
            return es.ngettext(singular, plural, n)

        def pgettext(self, context, message):
            if f"{context}\x04{message}" not in es._catalog:
                missing.add(f"{context}|{message}")
            return es.pgettext(context, message)

    monkeypatch.setattr(i18n, "translations", lambda language=None: Recording() if language == "es" else es)
    r = mixed_run
    write_report(r.run_dir, spec=r.spec, metrics=r.metrics, out_dir=tmp_path / "es", language="es")
    assert not missing, sorted(missing)


def test_every_template_message_has_a_spanish_string():
    """What ``make i18n`` extracts from the report's templates (babel.cfg's options) is all in the catalogue."""
    from jinja2.ext import babel_extract

    from diffkit import i18n

    es = i18n.translations("es")
    options = {"extensions": "jinja2.ext.i18n", "trimmed": "true", "newstyle_gettext": "true"}
    found = 0
    for path in sorted((REPO / "diffkit" / "audit" / "templates").glob("*.j2")):
        with path.open("rb") as f:
            for _, func, message, _ in babel_extract(f, ("_", "gettext", "ngettext", "pgettext"), [], options):
                parts = [m for m in (message if isinstance(message, tuple) else (message,)) if m is not None]
                key = {"pgettext": "\x04".join(parts[:2]), "ngettext": (parts[0], 0)}.get(func, parts[0])
                assert es._catalog.get(key), (path.name, message)
                found += 1
    assert found > 60


def test_machine_files_are_the_same_in_every_language(mixed_run, tmp_path):
    r = mixed_run
    for lang in ("en", "es"):
        write_report(r.run_dir, spec=r.spec, metrics=r.metrics, out_dir=tmp_path / lang, language=lang)
    csvs = sorted(p.name for p in (tmp_path / "en").glob("*.csv"))
    assert len(csvs) >= 10 and csvs == sorted(p.name for p in (tmp_path / "es").glob("*.csv"))
    for name in csvs:
        assert (tmp_path / "en" / name).read_bytes() == (tmp_path / "es" / name).read_bytes(), name
    meta = [json.loads((tmp_path / lang / "metadata.json").read_text()) for lang in ("en", "es")]
    for m in meta:
        m.pop("report_created_at")
    assert meta[0] == meta[1]
    overall = pd.read_csv(tmp_path / "es" / "overall.csv")
    assert overall["description"].str.contains("occupations").any()  # the CSV keeps its English columns
    assert '<html lang="en">' in (tmp_path / "en" / "index.html").read_text()


def test_each_prompt_carries_its_template_language(mixed_run, tmp_path):
    r = mixed_run
    by_prompt = pd.read_csv(r.run_dir / "report" / "by_prompt.csv")
    lang = dict(zip(by_prompt["prompt"], by_prompt["language"]))
    assert lang["a photo of a nurse"] == "en" and lang["una foto de nurse"] == "es"
    assert set(pd.read_csv(r.run_dir / "report" / "images.csv")["language"]) == {"en", "es"}
    html = (r.run_dir / "report" / "index.html").read_text()
    assert "<th>language</th>" in html and "idioma es" in html
    assert "mezcla idiomas en los prompts (en: 6 prompts, es: 2 prompts" in html and "MAGBIG" in html
    write_report(r.run_dir, spec=r.spec, metrics=r.metrics, out_dir=tmp_path / "en", language="en")
    assert "This spec mixes prompt languages" in (tmp_path / "en" / "summary.md").read_text()
    # a per-image table from before the language column (an old run's images.csv) still reports
    from diffkit.audit import audit_metrics

    old = audit_metrics(images=r.images.drop(columns=["language"]), ci=0.95)
    assert "language" not in old.by_prompt
    write_report(r.run_dir, spec=r.spec, metrics=old, out_dir=tmp_path / "old", language="es")


def test_report_command_takes_lang_and_the_environment(mixed_run, monkeypatch, tmp_path):
    import shutil

    from diffkit.errors import InputError

    run_dir = tmp_path / "run"
    shutil.copytree(mixed_run.run_dir, run_dir)  # the other tests read the fixture's own report
    monkeypatch.setenv("DIFFKIT_LANG", "es")
    monkeypatch.setenv("DIFFKIT_QUIET", "1")
    report_audit(run_dir, progress=False)  # the language diffkit speaks: DIFFKIT_LANG
    assert '<html lang="es">' in (run_dir / "report" / "index.html").read_text()
    assert main(["audit", "report", str(run_dir), "--no-progress", "--lang", "en"]) == 0
    html = (run_dir / "report" / "index.html").read_text()
    assert '<html lang="en">' in html and "Limitations" in html
    with pytest.raises(InputError, match="el informe se escribe en en, es, no en 'fr'"):  # DIFFKIT_LANG=es
        write_report(run_dir, spec=mixed_run.spec, metrics=mixed_run.metrics, language="fr")


def test_figures_are_labelled_in_the_report_language(mixed_run):
    from diffkit.audit import audit_figures

    es = audit_figures(mixed_run.metrics, language="es")["per_occupation"].axes[0]
    en = audit_figures(mixed_run.metrics, language="en")["per_occupation"].axes[0]
    assert es.get_xlabel() == "proporción etiquetada como femenina" and en.get_xlabel() == "share labelled female"


def test_spec_language_is_validated_with_its_fix(make_spec):
    assert make_spec().prompts.language == "en"  # the default: old specs read as English
    es = make_spec(prompts__templates=["una foto de {occupation}"], prompts__language="ES", controls__templates=[])
    assert es.prompts.language == "es" and es.controls.language == "es"  # controls follow the prompts
    for value, match in [
        ("spanish", r"prompts\.language: 'spanish' is not an ISO 639-1 language code; fix: use a two-letter code"),
        ("es-MX", r"prompts\.language: 'es-MX' is not a two-letter ISO 639-1 code; fix: write 'es'"),
        (["en", "es"], r"prompts\.language: 2 language\(s\) for 1 template\(s\); fix: give an ISO 639-1 code"),
        (7, r"prompts\.language: expected a language code such as \"es\", got int"),
    ]:
        with pytest.raises(SpecError, match=match):
            make_spec(prompts__language=value)
    with pytest.raises(SpecError, match=r"prompts\.templates\[0\]: \{a_occupation\} writes an English article"):
        make_spec(prompts__language="es")
    with pytest.raises(SpecError, match=r"controls\.language: missing"):
        make_spec(
            prompts__templates=["a photo of {occupation}", "una foto de {occupation}"], prompts__language=["en", "es"]
        )


def test_the_language_key_keeps_old_fingerprints_and_stored_specs(make_spec):
    from diffkit.audit.spec import spec_from_dict

    spec = make_spec()
    stored = spec.to_dict()
    del stored["prompts"]["language"], stored["controls"]["language"]  # a run folder from before the key
    old = spec_from_dict(stored)
    assert old.prompts.language == "en" and old.fingerprint() == spec.fingerprint()
    assert make_spec(prompts__language="en").fingerprint() == spec.fingerprint()
    mixed = make_spec(
        prompts__templates=["a photo of {occupation}", "una foto de {occupation}"],
        prompts__language=["en", "es"],
        controls__language="en",
    )
    assert spec_from_dict(mixed.to_dict()).prompts.language == ("en", "es")
    bad = mixed.to_dict()
    bad["prompts"]["language"] = ["en", "xx"]
    with pytest.raises(SpecError, match=r"prompts\.language: .*'xx'.*fix: the stored spec"):
        spec_from_dict(bad)


def test_the_spanish_example_spec_loads():
    from diffkit.audit import build_prompts, load_spec

    spec = load_spec("sd15_occupations_es")
    prompts = build_prompts(spec)
    assert set(prompts["language"]) == {"es"} and "tiny" not in spec.pipeline.model
