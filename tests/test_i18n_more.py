"""diffkit in Spanish, beyond the explorers and the CLI's help: the figures the notebooks draw, the
audit's printed lines and the errors users meet first. English stays as it was (the other tests
read it); here each message is asked for in Spanish, and in English where it matters."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from diffkit.errors import InputError
from diffkit.i18n import set_language

pytestmark = pytest.mark.usefixtures("english_environment")


def _texts(fig) -> list[str]:
    """Every piece of text on a figure: titles, axis labels, legend entries, free text."""
    out = [fig._suptitle.get_text()] if fig._suptitle is not None else []
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()] + [t.get_text() for t in ax.texts]
        legend = ax.get_legend()
        if legend is not None:
            out += [t.get_text() for t in legend.get_texts()]
    return [t for t in out if t]


# -- the figures of the notebooks ------------------------------------------------------------------
def test_forward_strip_in_spanish_and_english():
    from diffkit import sample_image
    from diffkit.plots import plot_forward_strip

    image = sample_image("coffee", 16)
    fig = plot_forward_strip(image, "linear", timesteps=[0, 999])
    assert fig._suptitle.get_text() == "forward chain, linear schedule" and fig.axes[0].get_title() == "x₀ (clean)"
    set_language("es")
    fig = plot_forward_strip(image, "linear", timesteps=[0, 999])
    assert fig._suptitle.get_text() == "cadena directa, calendario linear"
    assert [ax.get_title() for ax in fig.axes][:2] == ["x₀ (limpia)", "t=0\nᾱ=1.000"]
    with pytest.raises(InputError, match="recibe una sola imagen, no un lote"):
        plot_forward_strip(torch.zeros(2, 3, 8, 8))


def test_two_pixel_plot_in_spanish():
    from diffkit.plots import plot_two_pixel
    from diffkit.toy import two_pixel_chains

    set_language("es")
    fig = plot_two_pixel(two_pixel_chains(n_chains=20), show_paths=2)
    left, right = fig.axes[:2]
    assert left.get_title().startswith("un paso de Markov: campana de anchura √β₀ = ")
    assert left.get_title().endswith("y los primeros 60 pasos de 2 cadenas")
    assert right.get_title() == "20 cadenas derivan hacia N(0, I)"
    assert (left.get_xlabel(), right.get_ylabel()) == ("píxel 1", "píxel 2")
    assert "N(0, I) en píxeles: 2σ = 255 alrededor de 127.5" in _texts(fig)
    assert not [t for t in _texts(fig) if "chains" in t or "pixel" in t]


def test_paint_drop_and_gaussian_bells_in_spanish():
    from diffkit import paint_drop
    from diffkit.plots import plot_gaussian_bells, plot_paint_drop

    set_language("es")
    fig = plot_paint_drop(paint_drop(200, 20), steps=(0, 10))
    assert fig.axes[1].get_title().startswith("paso 10: anchura ") and "(√10·1 = 3.2)" in fig.axes[1].get_title()
    with pytest.raises(InputError, match=r"^steps debe ser menor que 21, la duración de la simulación$"):
        plot_paint_drop(paint_drop(200, 20), steps=(50,))
    fig = plot_gaussian_bells(170, (2, 5), draws=(173, 190))
    texts = _texts(fig)
    assert {"valor del píxel", "densidad", "anchura σ = 2", " 173 (probable)", " 190 (improbable)"} <= set(texts)
    set_language("en")
    assert {"pixel value", " 190 (unlikely)", "width σ = 5"} <= set(_texts(plot_gaussian_bells(170, (2, 5))))


def _anatomy() -> pd.DataFrame:
    """A two-level U as diffkit.unet_anatomy describes one (only the columns the plot reads)."""
    rows = [
        ("conv_in", "in", "conv", "8×8", 4, ""),
        ("down_blocks.0", "down 1", "resnet", "4×4", 8, ""),
        ("up_blocks.0", "up 1", "transformer", "8×8", 4, "conv_in"),
    ]
    df = pd.DataFrame(rows, columns=["part", "stage", "kind", "resolution", "channels", "skip_from"])
    df.attrs.update(timestep=999.0, text="(1, 77, 32)")
    return df


def test_unet_anatomy_plot_in_spanish():
    from diffkit.plots import plot_unet_anatomy

    set_language("es")
    ax = plot_unet_anatomy(_anatomy()).axes[0]
    assert ax.get_ylabel() == "mapa de características"
    assert ax.get_title().startswith("la U-Net, una llamada (t = 999): los números son canales; T, un transformer")
    assert "atiende al texto (1, 77, 32)" in ax.get_title()
    set_language("en")
    assert plot_unet_anatomy(_anatomy()).axes[0].get_title() == (
        "the U-Net, one call (t = 999): numbers are channels, T a transformer attending to the text (1, 77, 32), "
        "dashed arcs skip connections"
    )


def test_correction_figure_in_spanish():
    from diffkit.audit import correction_figure

    table = pd.DataFrame(
        {
            "occupation": ["nurse", "pilot"],
            "p_female": [0.8, 0.2],
            "ci_low": [0.6, 0.1],
            "ci_high": [0.9, 0.4],
            "p_corrected": [0.85, 0.15],
            "corrected_low": [0.6, 0.0],
            "corrected_high": [1.0, 0.4],
            "oracle_p_female": [0.9, 0.1],
        }
    )
    set_language("es")
    texts = _texts(correction_figure(table))
    assert "proporción femenina" in texts and "la verdad del oráculo (las mismas imágenes)" in texts
    assert "proporción bruta (Clopper–Pearson al 95%)" in texts and "Rogan–Gladen (95%, Se/Sp inciertas)" in texts


# -- what diffkit audit and diffkit unet print -----------------------------------------------------
def _headline_result():
    """What ``diffkit audit run`` prints its headline from: one occupation of two off parity."""
    from types import SimpleNamespace

    nan = float("nan")
    overall = pd.DataFrame(
        [
            {"metric": "mean_imbalance", "value": 0.3, "ci_low": 0.1, "ci_high": 0.4, "n": 2},
            {"metric": "fair_null_p", "value": 0.01, "ci_low": nan, "ci_high": nan, "n": 2},
            {"metric": "n_unfair_holm", "value": 1, "ci_low": nan, "ci_high": nan, "n": 2},
        ]
    )
    by_occupation = pd.DataFrame({"occupation": ["nurse", "pilot"], "p_fair_holm": [0.01, 0.5]})
    metrics = SimpleNamespace(overall=overall, by_occupation=by_occupation, params={"ci": 0.95})
    return SimpleNamespace(overall=overall, by_occupation=by_occupation, metrics=metrics)


def test_audit_headline_in_spanish_and_english(capsys, monkeypatch):
    from diffkit.audit.cli import _print_headline

    monkeypatch.delenv("DIFFKIT_QUIET", raising=False)
    _print_headline(_headline_result())
    english = capsys.readouterr().out.splitlines()
    assert "       n_unfair_holm: 1 of 2 (nurse)" in english
    assert english[-1].startswith("at parity everywhere? No: 1 of 2 occupations differ significantly")
    set_language("es")
    _print_headline(_headline_result())
    spanish = capsys.readouterr().out.splitlines()
    assert "      mean_imbalance: 0.300  [0.100, 0.400]" in spanish  # metric names stay (CSV columns)
    assert "       n_unfair_holm: 1 de 2 (nurse)" in spanish
    assert spanish[-1].startswith("¿paridad en todas las profesiones? No: ")


def test_audit_plan_in_spanish(capsys):
    from diffkit.cli import main

    set_language("es")
    assert main(["audit", "plan", "--half-width", "0.1", "--templates", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "objetivo: semianchura de Clopper–Pearson al 95% ≤ 0.1 con p̂ = 0.5 (alcanzado: 0.100)"
    assert out[1:3] == [
        "imágenes etiquetadas por profesión: 104",
        "imágenes por prompt: 52  (2 plantilla(s), 1 profesión(es), 104 imágenes de auditoría en total)",
    ]
    assert out[3].startswith("regla: el menor n con (B⁻¹(1 − α/2;")
    assert main(["audit", "plan", "--power", "0.8"]) == 2
    assert "power necesita imbalance=|p − ½| en (0, 0.5); solución: p. ej. imbalance=0.2" in capsys.readouterr().err


def test_unet_table_header_in_spanish(tmp_path, capsys, monkeypatch):
    from diffkit import cli
    from diffkit.testing import tiny_random_pipeline

    monkeypatch.setattr("diffkit.pipeline.load_pipeline", lambda model, **kw: tiny_random_pipeline("sd"))
    set_language("es")
    assert cli.main(["unet", "--model", "anything", "--out", str(tmp_path)]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header == ["orden", "parte", "etapa", "entrada", "salida", "resolución", "canales", "entra", "salto_desde"]
    assert pd.read_csv(tmp_path / "unet_anatomy.csv").columns[0] == "order"  # the CSV keeps its names


# -- the errors users meet first -------------------------------------------------------------------
def test_reverse_chain_errors_in_spanish():
    from diffkit import ReverseChain
    from diffkit.testing import tiny_random_pipeline

    pipe = tiny_random_pipeline("sd")
    set_language("es")
    with pytest.raises(InputError, match=r"^guidance_scale debe ser ≥ 0 y finito, y es -1.0; solución: 0–1 desactiva"):
        ReverseChain(pipe, "a red circle", guidance_scale=-1)
    with pytest.raises(InputError, match=r"^programador de ruido \(scheduler\) desconocido 'nope' para "):
        ReverseChain(pipe, "a red circle", scheduler="nope")
    with pytest.raises(InputError, match=r"^height=31 no es múltiplo del factor del VAE, \d+; solución: usa "):
        ReverseChain(pipe, "a red circle", height=31, width=32)
    with pytest.raises(InputError, match=r"^strength solo se aplica a img2img; solución: pasa también image="):
        ReverseChain(pipe, "a red circle", strength=0.5)
    with pytest.raises(InputError, match=r"^steps=2000 supera los 1000 instantes t que tiene la cadena directa"):
        ReverseChain(pipe, "a red circle", steps=2000)
    set_language("en")
    with pytest.raises(InputError, match=r"^guidance_scale must be ≥ 0 and finite, got -1.0; fix: 0–1 turns"):
        ReverseChain(pipe, "a red circle", guidance_scale=-1)


def test_load_pipeline_errors_in_spanish(tmp_path):
    from diffkit import load_pipeline
    from diffkit.errors import ModelUnavailableError

    set_language("es")
    with pytest.raises(ModelUnavailableError, match=r"^no existe la carpeta .*nope; solución: revisa la ruta"):
        load_pipeline(str(tmp_path / "nope"))
    with pytest.raises(InputError, match=r"^dispositivo desconocido 'warp'; solución: usa 'cpu', 'cuda'"):
        load_pipeline("tiny", device="warp")
    with pytest.raises(ModelUnavailableError, match="no es una carpeta de pipeline de diffusers"):
        load_pipeline(str(tmp_path))


@pytest.mark.parametrize(
    ("data", "spanish"),
    [
        ({"bogus": {}}, "<spec>: [bogus]: tabla desconocida; solución: usa las tablas ['audit', "),
        ({"audit": {}}, "<spec>: [prompts]: falta la tabla; solución: añade una tabla [prompts] (mira audits/"),
        (
            {"audit": {"images_per_prompt": 0}},
            "<spec>: audit.images_per_prompt: 0 está fuera de rango; solución: usa un valor entre 1 y ",
        ),
        (
            {"audit": {}, "prompts": {"templates": ["a {job}"], "attributes": {"occupation": ["nurse"]}}},
            "<spec>: prompts.templates[0]: marcador desconocido {job} en 'a {job}'; solución: usa uno de "
            "{a_occupation}, {occupation}",
        ),
        (
            {
                "audit": {"seeds": "random"},
                "prompts": {"templates": ["a {occupation}"], "attributes": {"occupation": ["nurse"]}},
                "pipeline": {"model": "tiny"},
            },
            "<spec>: audit.seeds: esquema de semillas desconocido 'random'; solución: usa 'derived', 'counting' o ",
        ),
        (
            {
                "prompts": {"templates": ["a {occupation}"], "attributes": {"occupation": ["x"]}, "language": "es-MX"},
                "pipeline": {"model": "tiny"},
            },
            "<spec>: prompts.language: 'es-MX' no es un código ISO 639-1 de dos letras; solución: escribe 'es' (el "
            "idioma sin su región)",
        ),
        (
            {
                "prompts": {"templates": ["a {occupation}"], "attributes": {"occupation": ["nurse"]}},
                "pipeline": {"model": "tiny"},
                "classifier": {"kind": "bogus"},
            },
            "<spec>: classifier.kind: tipo de etiquetador desconocido 'bogus'; solución: usa uno de ['open_clip', ",
        ),
    ],
)
def test_spec_errors_in_spanish(data, spanish):
    from diffkit.audit.spec import SpecError, parse_spec

    set_language("es")
    with pytest.raises(SpecError) as e:
        parse_spec(data)
    assert str(e.value).startswith(spanish), str(e.value)
    set_language("en")
    with pytest.raises(SpecError, match="; fix: "):
        parse_spec(data)


def test_a_reference_csv_error_in_spanish(tmp_path):
    from diffkit.audit.spec import SpecError, parse_spec

    (tmp_path / "ref.csv").write_text("occupation,women_share\nnurse,86.7\n")
    data = {"prompts": {"templates": ["a {occupation}"], "reference": "ref.csv"}, "pipeline": {"model": "tiny"}}
    set_language("es")
    with pytest.raises(
        SpecError, match=r"ref.csv: women_share debe ser una fracción en \[0, 1\]; solución: escribe 86.7% como"
    ):
        parse_spec(data, base_dir=tmp_path)
