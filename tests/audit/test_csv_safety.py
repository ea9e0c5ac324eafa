"""Published CSVs of a run are safe to open in a spreadsheet: no cell runs as a formula."""

from __future__ import annotations

import csv

from diffkit.audit import parse_spec, run_audit
from diffkit.audit.generate import DistState

EVIL = ['=HYPERLINK("http://example.invalid","click")', "+1+1", "@SUM(A1)", "-2+3"]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_images_and_tables_neutralise_formulas(pipe_dir, clip_name, pipe, tmp_path, monkeypatch):
    from audit_helpers import spec_dict

    import diffkit.audit.api as api

    monkeypatch.setattr(api, "dist_state", lambda: DistState())
    d = spec_dict(pipe_dir, clip_name)
    d["prompts"]["templates"] = ["-{occupation} at work", "a photo of {a_occupation}"]
    d["prompts"]["attributes"]["occupation"] = ["nurse", *EVIL]
    d["controls"]["gender_words"] = {"female": ["=woman"], "male": ["man"]}
    d["audit"].update(images_per_prompt=1, batch_size=8)
    d["controls"]["images_per_prompt"] = 1
    spec = parse_spec(d, source="evil.toml")
    result = run_audit(spec, out=tmp_path / "run", pipe=pipe, progress=False)
    report = result.report.parent
    names = sorted(p.name for p in report.glob("*.csv"))
    assert "images.csv" in names
    seen = set()
    for name in names:
        with open(report / name, newline="", encoding="utf-8") as f:
            for row in csv.reader(f):
                for cell in row:
                    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")) or _is_number(cell), (name, cell)
                    seen.add(cell)
    assert "'" + EVIL[0] in seen and "'-nurse at work" in seen  # neutralised, not dropped
