"""The shared file writers: atomic, unique temporaries, spreadsheet-safe CSV cells."""

from __future__ import annotations

import csv

import pandas as pd
import pytest

from diffkit._files import atomic_write_text, safe_cell, write_csv


@pytest.mark.parametrize("cell", ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"])
def test_formula_cells_are_neutralised(cell):
    assert safe_cell(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["a nurse", "", "1", 3, -2.5, None])
def test_plain_cells_are_unchanged(cell):
    assert safe_cell(cell) == cell


def test_write_csv_neutralises_text_but_keeps_numbers(tmp_path):
    df = pd.DataFrame({"prompt": ['=HYPERLINK("x")', "a nurse"], "delta": [-0.25, 0.5]})
    path = write_csv(df, tmp_path / "t.csv")
    rows = list(csv.DictReader(path.open()))
    assert rows[0]["prompt"] == '\'=HYPERLINK("x")'
    assert rows[1]["prompt"] == "a nurse"
    assert [float(r["delta"]) for r in rows] == [-0.25, 0.5]
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


def test_atomic_write_keeps_old_file_on_error(tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    atomic_write_text(path, "old")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_read_csv_gives_back_exactly_what_was_written(tmp_path):
    from diffkit._files import read_csv

    cells = ['=HYPERLINK("x")', "'quoted", "''twice", "+1", "-x", "@a", "a nurse", "it's"]
    df = pd.DataFrame({"occupation": cells, "n": range(len(cells))})
    back = read_csv(write_csv(df, tmp_path / "t.csv"))
    assert back["occupation"].tolist() == cells and back["n"].tolist() == list(range(len(cells)))
