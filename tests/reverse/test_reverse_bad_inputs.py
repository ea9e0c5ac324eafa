"""ReverseChain with what is not a pipeline, and ``diffkit reverse`` checking --out before it runs.

The table of bad ReverseChain arguments lives with the other bad inputs in tests/test_bad_inputs.py.
"""

from __future__ import annotations

import pytest

from diffkit.reverse import ReverseChain

PROMPT = "a red cube"


@pytest.mark.parametrize("pipe", [object(), "tiny", None], ids=["object", "string", "none"])
def test_not_a_pipeline(pipe):
    with pytest.raises(ValueError, match="is not supported: ReverseChain records StableDiffusionPipeline"):
        ReverseChain(pipe, PROMPT)


def test_cli_refuses_an_unwritable_out_before_running(tmp_path, capsys, monkeypatch):
    from diffkit import cli, pipeline

    def must_not_load(*a, **k):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(pipeline, "load_pipeline", must_not_load)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code = cli.main(["reverse", "a red cube", "--out", str(blocker / "x")])
    err = capsys.readouterr().err
    assert code == 2
    assert "a file is in the way" in err and "choose another output path" in err
    assert "Traceback" not in err


def test_a_full_disk_half_way_leaves_no_partial_output(tiny_sd_dir, tmp_path):
    """`diffkit reverse` writes five files; when the disk fills at the third, the two already
    written are removed (a strip without its table is not mistaken for a whole run)."""
    import errno
    import os
    from unittest import mock

    from diffkit.errors import DiskFullError
    from diffkit.reverse.cli import run_reverse

    calls = {"n": 0}
    real = os.fsync

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    out = tmp_path / "out"
    with mock.patch("diffkit._files.os.fsync", fsync), pytest.raises(DiskFullError, match="the disk is full"):
        run_reverse("a red cube", out=out, model=str(tiny_sd_dir), steps=2, height=32, width=32, log=lambda s: None)
    assert calls["n"] == 3 and list(out.iterdir()) == []
