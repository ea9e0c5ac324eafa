"""ReverseChain and ``diffkit reverse`` with bad input: each raises a ValueError that names the fix.

(img2img pictures in every form: tests/test_images.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffkit.reverse import ReverseChain

PROMPT = "a red cube"

CASES = [
    # (id, keyword arguments, words of the message)
    ("steps-zero", {"steps": 0}, "steps must be a whole number ≥ 1"),
    ("steps-negative", {"steps": -3}, "steps must be a whole number ≥ 1"),
    ("steps-float", {"steps": 2.5}, "steps must be a whole number ≥ 1"),
    ("steps-bool", {"steps": True}, "steps must be a whole number ≥ 1"),
    ("steps-text", {"steps": "25"}, "steps must be a whole number ≥ 1"),
    ("steps-none", {"steps": None}, "steps must be a whole number ≥ 1"),
    ("guidance-negative", {"guidance_scale": -0.1}, "guidance_scale must be ≥ 0"),
    ("guidance-nan", {"guidance_scale": float("nan")}, "guidance_scale must be ≥ 0"),
    ("guidance-inf", {"guidance_scale": float("inf")}, "guidance_scale must be ≥ 0"),
    ("guidance-text", {"guidance_scale": "high"}, "guidance_scale must be a number"),
    ("guidance-none", {"guidance_scale": None}, "guidance_scale must be a number"),
    ("rescale-negative", {"guidance_rescale": -0.1}, r"guidance_rescale must be in \[0, 1\]"),
    ("rescale-big", {"guidance_rescale": 1.5}, r"guidance_rescale must be in \[0, 1\]"),
    ("seed-negative", {"seed": -1}, r"seed must be a whole number in \[0, 2\*\*64\)"),
    ("seed-2-64", {"seed": 2**64}, r"seed must be a whole number in \[0, 2\*\*64\)"),
    ("seed-float", {"seed": 1.5}, "seed must be a whole number"),
    ("seed-bool", {"seed": True}, "seed must be a whole number"),
    ("seed-text", {"seed": "0"}, "seed must be a whole number"),
    ("seed-none", {"seed": None}, "seed must be a whole number"),
    ("height-zero", {"height": 0, "width": 32}, "height=0 is not a multiple of the VAE factor 2; use 2 or 4"),
    ("height-negative", {"height": -32, "width": 32}, "height=-32 is not a multiple"),
    ("height-odd", {"height": 33, "width": 32}, "height=33 is not a multiple of the VAE factor 2; use 32 or 34"),
    ("height-float", {"height": 32.0, "width": 32}, "height must be a whole number of pixels"),
    ("height-bool", {"height": True, "width": 32}, "height must be a whole number of pixels"),
    ("width-zero", {"height": 32, "width": 0}, "width=0 is not a multiple"),
    ("width-text", {"height": 32, "width": "32"}, "width must be a whole number of pixels"),
    ("prompt-none", {"prompt": None}, "prompt must be a string, got NoneType"),
    ("prompt-list", {"prompt": ["a", "b"]}, "prompt must be a string, got list"),
    ("negative-int", {"negative_prompt": 3}, "negative_prompt must be a string or None"),
    ("scheduler-typo", {"scheduler": "euler_a"}, "unknown scheduler 'euler_a'.*choose one of"),
    ("scheduler-flow-on-sd", {"scheduler": "flow_euler"}, "unknown scheduler 'flow_euler'"),
    ("scheduler-object", {"scheduler": object()}, "scheduler must be a name such as 'ddim'"),
    ("strength-no-image", {"strength": 0.5}, "strength applies to img2img only"),
    ("strength-zero", {"image": "photo", "strength": 0.0}, r"strength must be in \(0, 1\]"),
    ("strength-big", {"image": "photo", "strength": 1.5}, r"strength must be in \(0, 1\]"),
    ("strength-too-few-steps", {"image": "photo", "strength": 0.1, "steps": 5}, "raise steps to at least 10"),
    ("image-one-side", {"image": "photo", "height": 32}, "give both height and width, or neither"),
    ("image-latents", {"image": torch.zeros(4, 16, 16)}, "looks like latents"),
    ("image-0-255-floats", {"image": np.full((32, 32, 3), 200.0)}, "divide a 0–255 array by 255"),
    ("image-path", {"image": "cat.png"}, r"PIL.Image.open\(path\)"),
    ("record-dtype-int", {"record_dtype": torch.int8}, "record_dtype must be a floating dtype"),
]


@pytest.mark.parametrize(("kwargs", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_reverse_chain_input(sd_pipe, kwargs, says):
    from diffkit import sample_image

    kwargs = dict(kwargs)
    if isinstance(kwargs.get("image"), str) and kwargs["image"] == "photo":
        kwargs["image"] = sample_image("chelsea", 32)
    prompt = kwargs.pop("prompt", PROMPT)
    with pytest.raises(ValueError, match=says):
        ReverseChain(sd_pipe, prompt, **kwargs)


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
    assert "cannot write into --out" in err and "choose a folder you can write to" in err
    assert "Traceback" not in err
