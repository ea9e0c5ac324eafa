"""diffkit.plots registers IPython's PNG formatter when a figure is built, not on import."""

from __future__ import annotations

import importlib

import pytest


@pytest.fixture
def shell():
    pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell

    sh = InteractiveShell.instance()
    yield sh
    InteractiveShell.clear_instance()


def test_import_changes_nothing_and_the_first_figure_registers(shell):
    from matplotlib.figure import Figure

    import diffkit.plots

    png = shell.display_formatter.formatters["image/png"]
    png.type_printers.pop(Figure, None)
    importlib.reload(diffkit.plots)  # an import inside a kernel
    assert Figure not in png.type_printers
    fig = diffkit.plots.plot_schedules(["linear"])
    assert Figure in png.type_printers  # the notebook shows the figure the call returns
    data, _ = shell.display_formatter.format(fig)
    assert data["image/png"][:4] == b"\x89PNG"


def test_without_ipython_nothing_is_registered():
    from diffkit.plots import show_figures_in_notebooks

    try:
        from IPython.core.interactiveshell import InteractiveShell
    except ImportError:
        pass
    else:
        InteractiveShell.clear_instance()

    assert show_figures_in_notebooks() is False  # no shell running in a plain test process
