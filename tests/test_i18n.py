"""diffkit in Spanish: the catalogue is complete and compiled, the language is chosen in the
documented order, and the CLI, the checkers and the four explorers speak Spanish when asked."""

from __future__ import annotations

import io
import os
import re
import string
import subprocess
import sys
from pathlib import Path

import pytest

import diffkit
from diffkit.errors import InputError
from diffkit.i18n import LOCALE_DIR, get_language, set_language

ROOT = Path(__file__).resolve().parents[1]
PO = LOCALE_DIR / "es" / "LC_MESSAGES" / "diffkit.po"
MO = PO.with_suffix(".mo")


pytestmark = pytest.mark.usefixtures("english_environment")


def _read_po():
    from babel.messages.pofile import read_po

    with PO.open("rb") as f:
        return read_po(f)


def _extracted_ids() -> set:
    """Every message id in diffkit's code and templates, extracted afresh as ``make i18n`` does
    (a plural's id is its (singular, plural) pair)."""
    return {msgid for msgid, _context in _extracted()}


def _extracted() -> set:
    """Every (message id, context) in diffkit's code and templates, extracted afresh as ``make i18n`` does."""
    from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
    from babel.messages.frontend import parse_mapping_cfg

    with (ROOT / "babel.cfg").open() as f:
        method_map, options_map = parse_mapping_cfg(f)
    keywords = {**DEFAULT_KEYWORDS, "N_": None, "ngettext": (1, 2)}
    found = extract_from_dir(str(ROOT / "diffkit"), method_map, options_map, keywords=keywords)
    return {(msg if isinstance(msg, str) else tuple(msg), context) for _file, _line, msg, _comments, context in found}


# -- the catalogue ---------------------------------------------------------------------------------
def test_every_message_in_the_code_has_a_spanish_translation():
    found = _extracted()
    assert len(found) > 200  # the explorers, the CLI, the checkers at least
    catalogue = _read_po()
    untranslated = []
    for msgid, context in sorted(found, key=str):
        key = msgid[0] if isinstance(msgid, tuple) else msgid
        m = catalogue.get(key, context=context)
        strings = () if m is None else (m.string if isinstance(m.string, tuple) else (m.string,))
        if m is None or m.fuzzy or not strings or not all(s.strip() for s in strings):
            untranslated.append(key)
    assert not untranslated, f"no Spanish for {untranslated[:10]} ({len(untranslated)}); run make i18n and fill them"


def test_every_translated_call_is_seen_by_the_extractor():
    """``_("…")`` inside an f-string is not extracted (and stays English); ``_(f"…")`` or
    ``_("…" % x)`` can never be translated. Both are caught here, from the code's syntax trees."""
    import ast

    ids, bad = _extracted_ids(), []
    for path in sorted((ROOT / "diffkit").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("_", "gettext", "N_")):
                continue
            arg = node.args[0] if node.args else None
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if isinstance(arg, (ast.JoinedStr, ast.BinOp)):
                bad.append(f"{where}: a message built before it is translated")
            elif isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value not in ids:
                bad.append(f"{where}: {arg.value!r} is not extracted (inside an f-string?)")
    assert not bad, bad


def test_the_shipped_mo_is_the_compiled_po():
    from babel.messages.mofile import read_mo, write_mo

    fresh = io.BytesIO()
    write_mo(fresh, _read_po())
    fresh.seek(0)
    with MO.open("rb") as f:
        shipped = read_mo(f)

    def messages(catalogue):
        def frozen(x):
            return tuple(x) if isinstance(x, (list, tuple)) else x

        return {(frozen(m.id), m.context): frozen(m.string) for m in catalogue if m.id}

    assert messages(shipped) == messages(read_mo(fresh)), "the .mo is stale; run make i18n (pybabel compile)"


def _brace_fields(text: str) -> list[tuple[str, str]]:
    """The ``{name!conversion}`` fields of a ``str.format`` message (format specs may differ)."""
    try:
        return sorted((name, conv or "") for _lit, name, _spec, conv in string.Formatter().parse(text) if name)
    except ValueError:
        return sorted((f, "") for f in re.findall(r"\{[^{}]*\}", text))


def _percent_fields(text: str) -> list[str]:
    return sorted(re.findall(r"%\(\w+\)[sdifr]|%[sdifr]", text))


def test_placeholders_are_the_same_in_both_languages():
    bad = []
    for m in _read_po():
        if not m.id or not m.string:
            continue
        ids = m.id if isinstance(m.id, tuple) else (m.id,)
        strings = m.string if isinstance(m.string, tuple) else (m.string,)
        for s in strings:
            if isinstance(m.id, tuple):  # a plural: each form uses fields of the English forms
                ok = set(_brace_fields(s)) <= {f for i in ids for f in _brace_fields(i)}
            else:
                ok = _brace_fields(s) == _brace_fields(m.id)
                if "python-format" in m.flags:
                    ok = ok and _percent_fields(s) == _percent_fields(m.id)
            if not ok:
                bad.append((m.id, s))
    assert not bad, bad[:5]


def test_spanish_from_the_catalogue():
    from diffkit.i18n import gettext as _

    assert _("usage: ") == "usage: "
    set_language("es")
    assert _("usage: ") == "uso: " and _("no such message, left as it is") == "no such message, left as it is"


# -- which language --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "en"),
        ({"LANG": "es_ES.UTF-8"}, "es"),
        ({"LANGUAGE": "es_MX:en"}, "es"),
        ({"LC_MESSAGES": "es_AR.UTF-8", "LANG": "en_US.UTF-8"}, "es"),
        ({"LC_ALL": "en_GB.UTF-8", "LANG": "es_ES.UTF-8"}, "en"),
        ({"LC_ALL": "C", "LANG": "es_ES.UTF-8"}, "es"),  # C says nothing: the next variable decides
        ({"DIFFKIT_LANG": "es", "LC_ALL": "en_US.UTF-8"}, "es"),
        ({"DIFFKIT_LANG": "en", "LANG": "es_ES.UTF-8"}, "en"),
        ({"DIFFKIT_LANG": "fr"}, "en"),  # a language diffkit has no catalogue for: English
        ({"LANG": "de_DE.UTF-8"}, "en"),
    ],
)
def test_the_environment_chooses_the_language(monkeypatch, env, expected):
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert get_language() == expected


def test_set_language_comes_first_and_none_gives_the_choice_back(monkeypatch):
    monkeypatch.setenv("DIFFKIT_LANG", "es")
    assert diffkit.set_language("en") == "en" and diffkit.get_language() == "en"
    assert diffkit.set_language("es_MX") == "es"
    assert diffkit.set_language(None) == "es"  # back to DIFFKIT_LANG
    monkeypatch.delenv("DIFFKIT_LANG")
    assert diffkit.get_language() == "en"


def test_an_unknown_language_is_an_error_for_set_language():
    with pytest.raises(InputError, match=r'set_language\("es"\)'):
        set_language("fr")
    assert get_language() == "en"


# -- the command line ------------------------------------------------------------------------------
def _diffkit(*args: str, lang: str = "es") -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "DIFFKIT_LANG": lang, "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-m", "diffkit", *args], capture_output=True, text=True, env=env)


def test_help_in_spanish_under_diffkit_lang():
    out = _diffkit("--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("uso: diffkit [-h]"), out.stdout
    for line in ("opciones:", "muestra este mensaje de ayuda y sale", "audita el sesgo de género"):
        assert line in out.stdout, out.stdout
    assert "usage:" not in out.stdout and "show this help" not in out.stdout


def test_a_bad_value_is_a_spanish_error_under_diffkit_lang():
    out = _diffkit("audit", "plan", "--half-width", "0.1", "--ci", "nan")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "diffkit audit plan: error: ci=nan no es un número finito; solución: pasa un número entre 0 y 1 "
        "(lo habitual es 0.95)"
    ), out.stderr


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["reverse"], "diffkit reverse: error: faltan estos argumentos obligatorios: prompt"),
        (["demo", "--bogus"], "diffkit: error: argumentos no reconocidos: --bogus"),
        (["nope"], "diffkit: error: argumento COMANDO: opción no válida: 'nope' (elige entre 'demo',"),
        (["reverse", "x", "--steps", "many"], "error: argumento --steps: valor de tipo int no válido: 'many'"),
        (["reverse", "x", "--steps"], "error: argumento --steps: se esperaba un argumento"),
        (["reverse", "x", "--preview", "slow"], "argumento --preview: opción no válida: 'slow' (elige entre"),
    ],
)
def test_argparse_errors_in_spanish(capsys, argv, says):
    from diffkit.cli import main

    set_language("es")
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("uso: diffkit") and says in err, err


def test_sub_command_help_in_spanish(capsys):
    from diffkit.cli import build_parser, main

    set_language("es")
    with pytest.raises(SystemExit):
        main(["audit", "--help"])
    help_ = capsys.readouterr().out
    assert help_.startswith("uso: diffkit audit [-h] [--debug]") and "argumentos posicionales:" in help_
    assert "Genera conjuntos de prompts" in help_ and "muestra la traza completa de un error" in help_
    set_language(None)
    assert build_parser().format_help().startswith("usage: diffkit")


def test_checker_messages_in_both_languages():
    from diffkit.checks import check_choice, check_int

    with pytest.raises(InputError, match=r"^steps=0 is out of range; fix: pass an integer between 1 and 9$"):
        check_int("steps", 0, lo=1, hi=9)
    set_language("es")
    with pytest.raises(InputError, match=r"^steps=0 está fuera de rango; solución: pasa un entero entre 1 y 9"):
        check_int("steps", 0, lo=1, hi=9)
    with pytest.raises(InputError, match=r"no es una de las opciones; solución: pasa una de \['a'\]"):
        check_choice("mode", "b", ["a"])


# -- the explorers ---------------------------------------------------------------------------------
def test_schedule_explorer_in_spanish():
    from diffkit.widgets import ScheduleExplorer

    set_language("es")
    e = ScheduleExplorer(schedules=("linear",), image_size=16)
    assert e.schedule_select.description == "calendarios"
    assert e.use_defaults.description == "rango de β de cada calendario"
    assert "ᾱ_t (parte de la varianza que es señal)" in e.readout.value and "share" not in e.readout.value
    e.schedule_select.value = ()
    assert "No se pudo hacer." in e.error.value and "elige al menos un calendario" in e.error.value
    e.close()
    set_language(None)
    e = ScheduleExplorer(schedules=("linear",), image_size=16)
    assert e.schedule_select.description == "schedules" and "signal's share" in e.readout.value
    e.close()


def test_schedule_plot_in_spanish():
    from diffkit.plots import plot_schedules

    set_language("es")
    fig = plot_schedules(["linear"])
    assert [ax.get_xlabel() for ax in fig.axes] == ["instante t"] * 3
    assert fig.axes[0].get_title() == "β_t (ruido añadido en cada paso)"


def test_forward_chain_explorer_in_spanish(monkeypatch):
    import diffkit.widgets.forward_chain as fc
    from diffkit import sample_image

    monkeypatch.setattr(fc, "_default_pipe", lambda: None)
    set_language("es")
    e = fc.ForwardChainExplorer(sample_image("coffee", 16), pipe=None)
    assert (e.sample.description, e.schedule.description, e.upload.description) == ("imagen", "calendario", "tu imagen")
    assert e.step_button.description == "paso de Markov" and [label for label, _v in e.space.options] == [
        "píxeles",
        "latentes",
    ]
    assert e.space.value == "pixels" and "espacio latente" in e.space.tooltip
    assert "forma cerrada q(x_t | x_0)" in e.readout.value and "desviación típica" in e.readout.value
    e.step_button.click()
    assert "1 paso(s) de Markov" in e.readout.value
    e.close()


def test_two_pixel_explorer_in_spanish():
    from diffkit.widgets import TwoPixelExplorer

    set_language("es")
    e = TwoPixelExplorer(n_chains=10)
    assert [e.tabs.get_title(i) for i in range(3)] == ["un paso", "muchas cadenas", "hacia atrás"]
    assert (e.step_button.description, e.reset_button.description) == ("un paso", "reiniciar")
    assert [label for label, _v in e.eta.options] == ["DDPM (aleatorio)", "DDIM (determinista)"] and e.eta.value == 1.0
    assert "ahora en (170.0, 150.0) tras 0 paso(s)" in e.step_readout.value
    e.data_text.value = "300,1"
    e.run_reverse.click()
    assert "los valores de los píxeles deben estar en [0, 255]" in e.error.value
    e.close()


def test_reverse_chain_explorer_in_spanish():
    import torch

    from diffkit.testing import tiny_random_pipeline
    from diffkit.widgets import ReverseChainExplorer

    torch.set_num_threads(1)
    set_language("es")
    e = ReverseChainExplorer(tiny_random_pipeline("sd"), steps=2, size=32, exact=False)
    assert (e.run_button.description, e.cancel_button.description) == ("Ejecutar", "Cancelar")
    assert (e.steps.description, e.guidance.description, e.seed.description) == ("pasos", "guía", "semilla")
    assert e.scheduler.description == "programador" and e.next_button.description == "paso siguiente"
    e.run(wait=True)
    assert e.error.value == "" and "hecho: 2 llamadas a la U-Net" in e.status.value
    assert "x_t, los latentes con ruido" in e._x_t_title.value and "vista rápida lineal" in e._x_t_title.value
    assert "(sin texto)" in e._noise_titles[0].value and "el modelo predice" in e._noise_titles[0].value
    assert "instante t" in e.table.value and "guía libre de clasificador" in e.table.value and "(paso)" in e.table.value
    assert e.exact.description == "exacto (VAE)"
    assert "parte de la atención de cada píxel" in e.attention_scale.value
    e.close()
    set_language(None)
    with pytest.raises(InputError, match="steps=0 is out of range"):
        ReverseChainExplorer(tiny_random_pipeline("sd"), steps=0)
