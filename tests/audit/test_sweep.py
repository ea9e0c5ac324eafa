"""Sweeps: a spec listing several guidance scales (schedulers, steps) runs one arm per value with
the same seeds, and its report shows the imbalance against the swept value with paired intervals."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from audit_helpers import ledger_rows, spec_dict, to_toml

from diffkit.audit import SpecError, parse_spec, run_audit
from diffkit.audit.rundir import RunMismatchError
from diffkit.audit.spec import spec_from_dict
from diffkit.audit.sweep import SweepResult, arm_folder


def test_arms_are_the_product_of_the_listed_values(make_spec):
    spec = make_spec(pipeline__guidance_scale=[1.0, 7.5], pipeline__steps=[2, 3], pipeline__scheduler=["ddim", "euler"])
    names = [n for n, _ in spec.arms()]
    assert len(names) == 8 and names[0] == "scheduler=ddim,steps=2,guidance_scale=1"
    arms = dict(spec.arms())
    arm = arms["scheduler=euler,steps=3,guidance_scale=7.5"]
    assert (arm.pipeline.scheduler, arm.pipeline.steps, arm.pipeline.guidance_scale) == ("euler", 3, 7.5)
    assert not arm.sweep and arm.seed == spec.seed and arm.prompts == spec.prompts
    assert make_spec().arms() == [("", make_spec())]
    assert arm_folder("scheduler=euler,steps=3,guidance_scale=7.5") == "scheduler-euler-steps-3-guidance_scale-7.5"
    # one value in a list is no sweep; the stored spec keeps the sweep and refuses a bad value
    assert not make_spec(pipeline__guidance_scale=[3.0]).sweep
    d = spec.to_dict()
    assert [(n, a.pipeline) for n, a in spec_from_dict(d).arms()] == [(n, a.pipeline) for n, a in spec.arms()]
    d["sweep"]["guidance_scale"] = [1.0, -5.0]
    with pytest.raises(SpecError, match=r"pipeline.guidance_scale\[1\]: -5.0 is out of range"):
        spec_from_dict(d)


def test_a_guidance_sweep_end_to_end(make_spec, pipe, tmp_path):
    spec = make_spec(pipeline__guidance_scale=[1.0, 5.0])
    out = tmp_path / "sweep"
    res = run_audit(spec, out=out, pipe=pipe, progress=False)
    assert isinstance(res, SweepResult) and list(res.arms) == ["guidance_scale=1", "guidance_scale=5"]
    # the arms share prompts and seeds: every image of one has its twin in the other
    rows = {a: [(r[2], r[3]) for r in ledger_rows(out / "arms" / arm_folder(a))] for a in res.arms}
    assert rows["guidance_scale=1"] == rows["guidance_scale=5"]
    by_arm = res.by_arm.set_index("arm")
    assert by_arm["guidance_scale"].tolist() == [1.0, 5.0]
    assert {"mean_imbalance", "mean_imbalance_low", "mean_imbalance_high"} <= set(by_arm.columns)
    paired = res.paired.set_index("arm")
    assert (paired["design"] == "paired").all()
    assert paired.loc["guidance_scale=1", "diff_from_first"] == 0.0  # the first arm against itself
    assert (
        paired.loc["guidance_scale=5", "diff_low"]
        <= paired.loc["guidance_scale=5", "diff_from_first"]
        <= paired.loc["guidance_scale=5", "diff_high"]
    )
    html = (out / "report" / "index.html").read_text()
    assert "data:image/png;base64," in html and "paired" in html and "guidance_scale = [1.0, 5.0]" in html
    for name in ("sweep_by_arm.csv", "sweep_by_occupation.csv", "sweep_paired.csv"):
        assert len(pd.read_csv(out / "report" / name)) > 0
    assert (out / "arms" / "guidance_scale-5" / "report" / "index.html").is_file()
    assert json.loads((out / "sweep.json").read_text())["sweep"] == {"guidance_scale": [1.0, 5.0]}
    # a rerun resumes (nothing generated again); another sweep into the folder is refused
    before = ledger_rows(out / "arms" / "guidance_scale-1")
    run_audit(spec, out=out, pipe=pipe, progress=False)
    assert ledger_rows(out / "arms" / "guidance_scale-1") == before
    with pytest.raises(RunMismatchError, match="holds another sweep"):
        run_audit(make_spec(pipeline__guidance_scale=[1.0, 6.0]), out=out, pipe=pipe, progress=False)


def test_the_cli_runs_and_reports_a_sweep(pipe_dir, clip_name, tmp_path, capsys):
    from diffkit.cli import main

    d = spec_dict(pipe_dir, clip_name, pipeline__guidance_scale=[1.0, 3.0], pipeline__scheduler=["ddim"])
    (tmp_path / "s.toml").write_text(to_toml(d))
    assert parse_spec(d).sweep == {"guidance_scale": (1.0, 3.0)}
    assert main(["audit", "run", str(tmp_path / "s.toml"), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "guidance_scale=1: mean_imbalance" in out and "guidance_scale=3: mean_imbalance" in out
    assert main(["audit", "report", str(tmp_path / "run"), "--no-progress"]) == 0
    assert "report/index.html" in capsys.readouterr().out
