from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

from diffkit import sample_image, two_pixel_chains
from diffkit.cli import main
from diffkit.plots import (
    image_grid,
    plot_forward_strip,
    plot_schedules,
    plot_two_pixel,
    strip_timesteps,
)


def test_plots_return_figures_and_never_show():
    plt.close("all")
    figs = [
        plot_schedules(["linear", "cosine"]),
        plot_forward_strip(sample_image("rocket", 32), "cosine", timesteps=[0, 500, 999]),
        plot_two_pixel(two_pixel_chains(n_chains=20)),
        image_grid([sample_image("coffee", 16)] * 3, titles=["a", "b", "c"]),
    ]
    assert all(isinstance(f, Figure) for f in figs)
    assert plt.get_fignums() == []  # nothing went through pyplot's global state
    strip = figs[1]
    assert len([a for a in strip.axes if a.images]) == 4
    assert strip.axes[1].get_title().startswith("t=0")
    lines = figs[0].axes[1].get_lines()
    assert len(lines) >= 2


def test_strip_timesteps():
    assert strip_timesteps(1000) == [99, 199, 299, 399, 499, 599, 699, 799, 899, 999]
    with pytest.raises(ValueError):
        strip_timesteps(1000, 0)


def test_plot_schedules_bad_quantity():
    with pytest.raises(ValueError, match="unknown quantities"):
        plot_schedules("linear", quantities=["entropy"])


def test_unknown_sample_image():
    with pytest.raises(ValueError, match="choose one of"):
        sample_image("mona_lisa")


def test_cli_demo_writes_the_figures(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--no-model"]) == 0
    out = capsys.readouterr().out
    for name in ("schedules.png", "schedules.csv", "forward_strip_linear.png", "two_pixel.png"):
        assert (tmp_path / name).stat().st_size > 1000
        assert name in out
    assert str(tmp_path.resolve()) in out


def test_story_plots():
    from diffkit import paint_drop
    from diffkit.plots import plot_gaussian_bells, plot_paint_drop

    fig = plot_paint_drop(paint_drop(200, 50), steps=(0, 10, 50))
    assert len(fig.axes) == 3 and "step 50" in fig.axes[2].get_title()
    fig = plot_gaussian_bells(170, (2, 5), draws=(173, 190))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any("173 (likely)" in t for t in texts) and any("190 (unlikely)" in t for t in texts)
    with pytest.raises(ValueError):
        plot_gaussian_bells(170, ())


@pytest.mark.slow
def test_demo_on_diffkit_tiny_writes_the_grid_the_strip_and_runs_the_audit(tmp_path, monkeypatch, capsys):
    from PIL import Image

    import diffkit.audit
    from diffkit.demo import run_demo

    audits = []

    class _Result:  # the audit itself is tested end to end in tests/audit/test_tiny_default.py
        report = tmp_path / "audit" / "tiny_default" / "report.html"

    monkeypatch.setattr(diffkit.audit, "run_audit", lambda spec, **kw: audits.append((spec, kw)) or _Result())
    written = run_demo(tmp_path / "demo", with_model=True, log=print)
    assert Image.open(tmp_path / "demo" / "tiny_grid.png").size[0] > 400
    assert Image.open(tmp_path / "demo" / "reverse_chain_strip.png").size[0] > 400
    assert audits and audits[0][0] == "tiny_default" and audits[0][1]["out"] == tmp_path / "audit" / "tiny_default"
    assert _Result.report in written and "audit report:" in capsys.readouterr().out
