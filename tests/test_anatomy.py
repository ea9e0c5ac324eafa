"""unet_anatomy: the U-Net's parts in call order, shapes read by hooks that change nothing."""

from __future__ import annotations

import pytest
import torch

from diffkit.anatomy import unet_anatomy
from diffkit.testing import tiny_random_pipeline


@pytest.fixture(scope="module")
def pipe():
    torch.set_num_threads(1)
    return tiny_random_pipeline("sd")


def _all_hooks(module):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def test_the_table_follows_the_unet_down_middle_up(pipe):
    cfg = pipe.unet.config
    before = _all_hooks(pipe.unet)
    df = unet_anatomy(pipe, "a red circle")
    assert _all_hooks(pipe.unet) == before  # every hook removed
    assert list(df.part[:2]) == ["time_embedding", "conv_in"] and df.part.iloc[-1] == "conv_out"
    side = cfg.sample_size
    assert df.output.iloc[-1] == (1, cfg.out_channels, side, side)  # the prediction has the latents' shape
    assert df.loc[df.part == "conv_in", "channels"].item() == cfg.block_out_channels[0]
    stages = list(dict.fromkeys(df.stage))
    n = len(cfg.block_out_channels)
    assert stages == [
        "conditioning",
        "in",
        *[f"down {i}" for i in range(1, n + 1)],
        "middle",
        *[f"up {i}" for i in range(1, n + 1)],
        "out",
    ]
    # each down level ends at its own width; the resolution halves between levels
    for i, ch in enumerate(cfg.block_out_channels):
        last = df[(df.stage == f"down {i + 1}") & df.part.str.contains("resnets")].iloc[-1]
        assert last.channels == ch and last.output[-1] == side >> i
    # every output the down path saves is concatenated once in the up path, channels and all
    saved = [
        r.channels
        for r in df.itertuples()
        if r.part == "conv_in"
        or (
            r.stage.startswith("down")
            and (
                ".downsamplers." in r.part
                or (".resnets." in r.part and not ((df.part == r.part.replace("resnets", "attentions")).any()))
                or ".attentions." in r.part
            )
        )
    ]
    skips = [int(e.split(": ")[1].split(" ")[0]) for e in df.enters if e.startswith("skip connection")]
    assert sorted(skips) == sorted(saved) and len(skips) == len(pipe.unet.up_blocks) * (cfg.layers_per_block + 1)
    # and each concatenation adds up: the ResNet's input = what came before it + the named skip
    for i in df.index[df.skip_from != ""]:
        before = df.output[i - 1][1]
        assert df.input[i][1] == before + df.channels[df.part == df.skip_from[i]].item()
    # the text each transformer attends to is the text encoder's output for the prompt
    text = f"text {(1, pipe.tokenizer.model_max_length, cfg.cross_attention_dim)} as keys and values"
    assert (df[df.part.str.contains("attentions")].enters == text).all()
    assert df.attrs["text"] == (1, pipe.tokenizer.model_max_length, cfg.cross_attention_dim)
    assert all("time embedding" in e for e in df[df.part.str.contains("resnets")].enters)


def test_the_hooks_change_nothing(pipe):
    def run():
        return pipe(
            "a red circle",
            num_inference_steps=2,
            guidance_scale=1.0,
            output_type="latent",
            generator=torch.Generator().manual_seed(0),
        ).images

    before = run()
    unet_anatomy(pipe)
    assert torch.equal(run(), before)


def test_a_global_text_path_is_named_where_the_model_has_one():
    """diffkit-tiny 1's design (random weights): attention-pooled text added to the time embedding."""
    from diffkit.tiny import models as M
    from diffkit.tiny.export import build_pipeline

    pipe = build_pipeline(
        M.build_unet(0, addition_embed_type="text", addition_embed_type_num_heads=4),
        M.build_text_encoder(0),
        M.build_vae(0),
        M.build_tokenizer(),
    )
    df = unet_anatomy(pipe)
    row = df[df.part == "add_embedding"]
    assert pipe.unet.config.addition_embed_type == "text" and len(row) == 1
    assert "attention-pooled, added to the time embedding" in row.kind.item()
    assert row.input.item() == (1, pipe.tokenizer.model_max_length, pipe.unet.config.cross_attention_dim)


def test_the_shipped_model_takes_the_text_only_through_cross_attention():
    from diffkit import load_pipeline
    from diffkit.tiny import pipeline_path

    try:
        pipeline_path()
    except OSError:
        pytest.skip("diffkit-tiny's weights are not here")
    df = unet_anatomy(load_pipeline("tiny"))
    assert not (df.part == "add_embedding").any()
    assert df.kind.str.contains("cross-attention").sum() >= 3


def test_transformer_denoisers_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="SD3Transformer2DModel.*Fix: pass a Stable Diffusion 1.x/2.x"):
        unet_anatomy(tiny_random_pipeline("sd3"))


def test_the_plot_draws_every_part_and_every_skip(pipe):
    from matplotlib.patches import FancyArrowPatch, Rectangle

    from diffkit.plots import plot_unet_anatomy

    df = unet_anatomy(pipe)
    fig = plot_unet_anatomy(df)
    ax = fig.axes[0]
    boxes = [p for p in ax.patches if isinstance(p, Rectangle)]
    arcs = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(boxes) == (df.resolution != "").sum()
    assert len(arcs) == df.enters.str.startswith("skip connection").sum()
    with pytest.raises(ValueError, match="unet_anatomy"):
        plot_unet_anatomy(df[df.resolution == ""])


def test_cli_prints_and_writes_the_table(tmp_path, capsys, monkeypatch):
    import pandas as pd

    from diffkit import cli

    monkeypatch.setattr("diffkit.pipeline.load_pipeline", lambda model, **kw: tiny_random_pipeline("sd"))
    assert cli.main(["unet", "--model", "anything", "--out", str(tmp_path)]) == 0
    said = capsys.readouterr().out
    assert "conv_in" in said and "skip connection" in said
    df = pd.read_csv(tmp_path / "unet_anatomy.csv")
    assert df.part.iloc[-1] == "conv_out" and (tmp_path / "unet_anatomy.png").stat().st_size > 0
