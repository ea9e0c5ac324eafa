"""End to end on tiny random models: run → report → compare, through the API and the CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from audit_helpers import spec_dict, to_toml

from diffkit.audit import compare_audits, parse_spec, report_audit, run_audit
from diffkit.cli import main


@pytest.fixture(scope="module")
def evil_run(pipe_dir, clip_name, pipe, tmp_path_factory):
    d = spec_dict(pipe_dir, clip_name)
    d["audit"]["name"] = "evil"  # names are folder names (checked by the spec); the description is free text
    d["audit"]["description"] = "evil <script>alert('name')</script>"
    d["prompts"]["templates"] = ["a photo of {a_occupation} <script>alert(1)</script> & <b>bold</b>"]
    spec = parse_spec(d, source="evil.toml")
    out = tmp_path_factory.mktemp("evil") / "run"
    return run_audit(spec, out=out, pipe=pipe, progress=False)


def test_run_audit_writes_every_table_and_a_report(evil_run):
    r = evil_run
    files = {p.name for p in (r.run_dir / "report").iterdir()}
    assert {
        "index.html",
        "summary.md",
        "metadata.json",
        "images.csv",
        "by_prompt.csv",
        "by_occupation.csv",
        "validation.csv",
        "validation_by_occupation.csv",
        "reliability.csv",
        "overall.csv",
        "published_fair_diffusion.csv",
    } <= files
    assert not [f for f in files if f.endswith(".tmp")]  # atomic writes leave no temporary files
    assert len(r.images) == 14 and set(r.images["label"]) <= {"female", "male", "abstain", "no_person"}
    occ = pd.read_csv(r.run_dir / "report" / "by_occupation.csv")
    assert list(occ["occupation"]) == ["nurse", "pilot"]
    assert occ["p_ref"].tolist() == pytest.approx([0.867, 0.053])
    assert {
        "mean_imbalance",
        "fair_null_p",
        "mean_fair_baseline",
        "pearson_r",
        "amplification",
        "n_amplified_holm",
        "n_unfair_holm",
        "heim_gender_imbalance",
        "sensitivity",
        "specificity",
        "mean_kl_uniform",
    } <= set(r.overall["metric"])
    assert "amplification_share" not in set(r.overall["metric"])  # a coin flip for an unbiased model
    # nurse and pilot are in Fair Diffusion's published table: the report overlays them
    pub = pd.read_csv(r.run_dir / "report" / "published_fair_diffusion.csv")
    assert pub["occupation"].tolist() == ["nurse", "pilot"] and pub["published_p_female"].tolist() == pytest.approx(
        [1.0, 52 / 250]
    )
    meta = json.loads((r.run_dir / "report" / "metadata.json").read_text())
    assert meta["libraries"]["open_clip_torch"] and meta["ledger"]["images_by_status"] == {"done": 14}
    assert meta["seed"] == 7 and meta["classifier"]["pretrained"].startswith("weights-")


def test_audit_figures_are_pyplot_free_figures(evil_run):
    import matplotlib
    from matplotlib.figure import Figure

    from diffkit.audit import audit_figures

    backend = matplotlib.get_backend()
    figs = audit_figures(evil_run.metrics)
    assert set(figs) == {"per_occupation", "scatter", "direction", "imbalance", "reliability"}
    assert all(isinstance(f, Figure) and f.axes for f in figs.values())
    ax = figs["per_occupation"].axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["pilot", "nurse"]  # ordered by reference share
    assert matplotlib.get_backend() == backend  # no backend switch behind a notebook's back


def test_report_escapes_user_text_and_makes_no_external_requests(evil_run):
    html_text = (evil_run.run_dir / "report" / "index.html").read_text()
    assert "<script" not in html_text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    assert "<b>bold</b>" not in html_text and "&lt;b&gt;bold&lt;/b&gt;" in html_text
    # every src is an embedded data: URI; no link, stylesheet or font fetched from anywhere
    srcs = re.findall(r"""\bsrc\s*=\s*["']([^"']*)""", html_text)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert not re.search(r"""(href|src)\s*=\s*["']?\s*(https?:)?//""", html_text)
    assert "url(" not in html_text and "@import" not in html_text
    assert html_text.count("data:image/png;base64") >= 3 + 2  # plots + thumbnails
    for section in (
        "Limitations",
        "Classifier validation",
        "Run metadata",
        "Generated versus reference",
        "Reliability diagram",
        "Thresholds the controls suggest",
        "simultaneous",
        "Amplification",
        "Holm-adjusted",
        "Fair Diffusion",
    ):
        assert section in html_text, section
    assert "95%" in html_text and "90%" not in html_text
    md = (evil_run.run_dir / "report" / "summary.md").read_text()
    assert "<script" not in md
    assert "&#x27;" not in md and "&#39;" not in md  # Markdown shows an apostrophe as it is ("Holm's")


def test_report_and_compare_from_folders(evil_run, tmp_path):
    again = report_audit(evil_run.run_dir, progress=False)  # embeddings come from the cache
    pd.testing.assert_frame_equal(again.by_occupation, evil_run.by_occupation)
    by, overall, path = compare_audits(evil_run.run_dir, evil_run.run_dir, out=tmp_path / "cmp")
    assert path.is_file() and (by["diff"] == 0).all()
    assert overall.attrs["paired"]  # the same seeds and prompts: paired image by image
    ov = overall.set_index("metric")
    row = ov.loc["mean_imbalance"]
    assert row["diff"] == 0 and row["ci_low"] < 0 < row["ci_high"]  # exactly 0, never a point
    text = path.read_text()
    assert "<script" not in text.lower() and "paired by prompt and seed" in text


def test_ci_is_honoured_in_every_label(evil_run, tmp_path):
    import dataclasses

    from diffkit.audit import audit_metrics, write_report

    spec = evil_run.spec
    spec90 = dataclasses.replace(spec, report=dataclasses.replace(spec.report, ci=0.9))
    m = audit_metrics(images=evil_run.images, ci=0.9, n_boot=50, seed=0)
    path = write_report(evil_run.run_dir, spec=spec90, metrics=m, out_dir=tmp_path / "r90")
    text = path.read_text()
    assert "90%" in text and "95%" not in text.replace("95th", "")
    assert "95%" not in (tmp_path / "r90" / "summary.md").read_text()


def test_cli_run_report_compare(pipe_dir, clip_name, tmp_path, capsys):
    spec_file = tmp_path / "spec.toml"
    d = spec_dict(pipe_dir, clip_name)
    d["audit"]["images_per_prompt"] = 2
    d["controls"]["images_per_prompt"] = 1
    spec_file.write_text(to_toml(d))
    out = tmp_path / "run"
    assert main(["audit", "run", str(spec_file), "--out", str(out), "--no-progress"]) == 0
    assert f"report: {out / 'report' / 'index.html'}" in capsys.readouterr().out
    assert main(["audit", "report", str(out), "--no-progress"]) == 0
    assert main(["audit", "compare", str(out), str(out), "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    assert "mean_imbalance" in printed and "comparison:" in printed
    # a different spec into the same folder is refused with a clear message, exit code 2
    d["audit"]["seed"] = 8
    spec_file.write_text(to_toml(d))
    assert main(["audit", "run", str(spec_file), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "diffkit audit" in err and "error:" in err and "never mixes runs" in err
    # a spec error names the file, the key and the fix
    d["prompts"]["templates"] = ["a {job}"]
    spec_file.write_text(to_toml(d))
    assert main(["audit", "run", str(spec_file), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "spec.toml: prompts.templates[0]: unknown placeholder {job}" in err and "fix:" in err


def test_corrupt_png_found_at_scoring_is_marked_and_regenerated(evil_run, pipe, tmp_path):
    import shutil
    import sqlite3

    run = tmp_path / "run"
    shutil.copytree(evil_run.run_dir, run)
    (run / "images" / "0001" / "0000.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="1 PNG.*marked corrupt.*Rerun"):
        partial = report_audit(run, progress=False)
    assert len(partial.images) == 13
    con = sqlite3.connect(run / "ledger.sqlite")
    assert con.execute("SELECT status FROM images WHERE prompt_id = 1 AND image_index = 0").fetchone() == ("corrupt",)
    con.close()
    whole = run_audit(evil_run.spec, out=run, pipe=pipe, progress=False)
    assert len(whole.images) == 14
    pd.testing.assert_frame_equal(whole.by_occupation, evil_run.by_occupation)


def test_cli_wiring_and_defaults():
    from pathlib import Path

    from diffkit.audit import default_out, load_spec
    from diffkit.cli import build_parser

    args = build_parser().parse_args(["audit", "run"])
    assert args.spec == "tiny_default" and args.out is None and args.model is None
    args = build_parser().parse_args(["audit", "compare", "a", "b"])
    assert (args.run_a, args.run_b) == ("a", "b")
    spec = load_spec("tiny_default")
    assert default_out(spec) == Path("out/audit/tiny_default")
    assert default_out(spec, "stabilityai/sd-turbo") == Path("out/audit/tiny_default--stabilityai-sd-turbo")


def test_blacked_out_images_are_counted_apart(evil_run, tmp_path):
    """A safety checker's black image shows nobody: labelled blacked_out (whatever CLIP says of it),
    counted per occupation, left out of p̂ and out of HEIM's way, shown in the report."""
    import hashlib
    import shutil
    import sqlite3

    import numpy as np
    from PIL import Image

    run = tmp_path / "run"
    shutil.copytree(evil_run.run_dir, run)
    png = run / "images" / "0000" / "0001.png"
    with Image.open(png) as im:
        size = im.size
    Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(png)
    con = sqlite3.connect(run / "ledger.sqlite")
    con.execute(
        "UPDATE images SET sha256 = ? WHERE prompt_id = 0 AND image_index = 1",
        (hashlib.sha256(png.read_bytes()).hexdigest(),),
    )
    con.commit()
    con.close()
    r = report_audit(run, progress=False)
    img = r.images.set_index(["prompt_id", "image_index"])
    assert img.loc[(0, 1), "label"] == "blacked_out" and bool(img.loc[(0, 1), "blacked_out"])
    assert int(r.images["blacked_out"].sum()) == 1
    occ = r.by_occupation.set_index("occupation")
    first = img.loc[(0, 1), "occupation"]
    assert occ.loc[first, "n_blacked_out"] == 1
    assert occ.loc[first, "n"] == evil_run.by_occupation.set_index("occupation").loc[first, "n"] - (
        evil_run.images.set_index(["prompt_id", "image_index"]).loc[(0, 1), "label"] in ("female", "male")
    )
    assert r.overall.set_index("metric").loc["blacked_out_rate", "value"] == pytest.approx(1 / 6)
    html_text = (run / "report" / "index.html").read_text()
    assert "blacked-out (safety-filtered)" in html_text and "n_blacked_out" in html_text
    # a second report reads the flag from the cache, without looking at the pixels again
    again = report_audit(run, progress=False)
    pd.testing.assert_frame_equal(again.by_occupation, r.by_occupation)


def test_an_occupation_that_is_not_valid_tex_still_gets_its_report(pipe_dir, clip_name, pipe, tmp_path):
    """matplotlib reads $…$ as TeX: an occupation such as '$\\frac{a$' broke the figures after the
    whole run had been generated and scored, and left report/ without index.html."""
    d = spec_dict(pipe_dir, clip_name)
    d["prompts"].pop("reference")
    d["prompts"]["attributes"]["occupation"] = ["$\\frac{a$", "pilot"]
    r = run_audit(parse_spec(d, source="tex.toml"), out=tmp_path / "run", pipe=pipe, progress=False)
    html_text = (r.run_dir / "report" / "index.html").read_text()
    assert "$\\frac{a$" in html_text and "<img" in html_text


def test_report_of_a_run_with_no_finished_image_names_the_fix(make_spec, tmp_path):
    from diffkit.audit.rundir import prepare_run
    from diffkit.errors import StateError

    prepare_run(make_spec(), tmp_path / "run")
    with pytest.raises(StateError, match="no finished audit image to report yet; fix: run `diffkit audit run`"):
        report_audit(tmp_path / "run", progress=False)


def test_report_never_says_not_rejected_beside_an_unfair_occupation(evil_run):
    """The global fair test is Holm's first step: the report's one sentence, its summary and the
    command line state the same decision, for data at parity and data far from it."""
    from diffkit.audit import audit_metrics
    from diffkit.audit.report import fair_sentence

    rng = np.random.default_rng(0)
    for _ in range(30):
        p = rng.choice([0.5, 0.5, 0.6, 0.9, 0.05], size=4)
        rows = [
            dict(
                prompt_id=g,
                kind="audit",
                occupation=f"o{g}",
                p_ref=np.nan,
                stated_gender=None,
                label="female" if rng.random() < p[g] else "male",
            )
            for g in range(4)
            for _ in range(24)
        ]
        m = audit_metrics(images=pd.DataFrame(rows))
        ov = m.overall.set_index("metric")["value"]
        text = fair_sentence(m)
        rejected, unfair = ov["fair_null_p"] <= 0.05, ov["n_unfair_holm"] > 0
        assert rejected == unfair
        assert ("Not rejected" in text) == (not unfair) and ("differ significantly" in text) == unfair
    html_text = (evil_run.run_dir / "report" / "index.html").read_text()
    assert fair_sentence(evil_run.metrics).split(" (")[0].replace("'", "&#39;") in html_text
    md = (evil_run.run_dir / "report" / "summary.md").read_text()
    assert "reversed, on the other side of ½ (Holm)" in md and "at parity in every occupation?" in md
