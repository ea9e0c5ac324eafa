"""Cross-attention capture: per token, step and layer; never changes the image; always restored."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffkit.reverse import (
    CrossAttentionStore,
    ReverseChain,
    aggregate_attention,
    capture_cross_attention,
    cross_attention_layers,
    overlay,
)
from diffkit.reverse.attention import attention_probs

PROMPT = "a red cube and a blue ball"


def _processors(unet):
    return {name: p for name, p in unet.attn_processors.items()}


@pytest.mark.parametrize(("kind", "name"), [("sd", "ddim"), ("sdxl", "euler_ancestral"), ("sd", "heun")])
def test_capture_on_and_off_give_identical_images(pipes, kind, name):
    pipe = pipes[kind]
    before = _processors(pipe.unet)
    kw = dict(steps=3, height=32, width=32, scheduler=name, seed=1)
    off = ReverseChain(pipe, PROMPT, **kw).run()
    on = ReverseChain(pipe, PROMPT, capture_attention=True, **kw).run()
    np.testing.assert_array_equal(on.image, off.image)
    for a, b in zip(on, off):
        assert torch.equal(a.noise_pred, b.noise_pred)
    assert off[0].attention is None and on[0].attention is not None
    # the original processors are back, the very same objects
    after = _processors(pipe.unet)
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)


def test_maps_per_token_step_and_layer(sd_pipe, sdxl_pipe):
    for pipe in (sd_pipe, sdxl_pipe):
        chain = ReverseChain(pipe, PROMPT, steps=2, height=32, width=48, capture_attention=True)
        traj = chain.run()
        layers = [n for n, _ in cross_attention_layers(pipe.unet)]
        n = traj.tokens.n_tokens
        assert n == len(traj.tokens.words) == 9  # start, 7 words, end
        for rec in traj:
            assert sorted(rec.attention) == sorted(layers)  # (stored in forward order)
            for m in rec.attention.values():
                assert m.dtype == torch.float16 and m.shape[0] == n
                assert m.shape[-1] * 16 == m.shape[-2] * 24  # the 2:3 aspect survives
                # probabilities: each pixel's mass over the prompt positions is at most 1
                s = m.float().sum(0)
                assert (s <= 1.001).all() and (s > 0).all()
        # aggregated, upsampled to the image
        cube = traj.attention_map("cube")
        assert cube.shape == (32, 48) and torch.isfinite(cube).all()
        first = traj.attention_map(3, indices=[0], layers="up_blocks")
        assert first.shape == (32, 48)
        img = traj.attention_overlay("ball")
        assert img.shape == (32, 48, 3) and img.dtype == np.uint8
        with pytest.raises(ValueError, match="not a token of this prompt"):
            traj.attention_map("giraffe")
        with pytest.raises(ValueError, match="padding"):
            traj.attention_map(40)


def test_explicit_softmax_equals_diffusers_attention_scores(sd_pipe):
    """The maps are the softmax diffusers' own explicit path (get_attention_scores) computes."""
    name, attn = cross_attention_layers(sd_pipe.unet)[0]
    torch.manual_seed(0)
    hs = torch.randn(2, 16, attn.to_q.in_features)
    ehs = torch.randn(2, 77, attn.to_k.in_features)
    ours = attention_probs(attn, hs, ehs)  # (B, N, T)
    q = attn.head_to_batch_dim(attn.to_q(hs))
    k = attn.head_to_batch_dim(attn.to_k(ehs))
    theirs = attn.get_attention_scores(q, k).view(2, attn.heads, 16, 77).mean(1)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_processors_restored_after_an_exception(sd_pipe):
    before = _processors(sd_pipe.unet)
    store = CrossAttentionStore(n_tokens=4, latent_size=(8, 8))
    with pytest.raises(RuntimeError, match="boom"):
        with capture_cross_attention(sd_pipe.unet, store):
            assert any(type(p).__name__ == "AttentionTap" for p in _processors(sd_pipe.unet).values())
            raise RuntimeError("boom")
    after = _processors(sd_pipe.unet)
    assert all(after[k] is before[k] for k in before)

    # …and when the U-Net itself fails in the middle of a captured chain step
    chain = ReverseChain(sd_pipe, PROMPT, steps=2, height=32, width=32, capture_attention=True)
    hook = sd_pipe.unet.mid_block.register_forward_hook(lambda *a: (_ for _ in ()).throw(RuntimeError("mid")))
    try:
        with pytest.raises(RuntimeError, match="mid"):
            next(chain)
    finally:
        hook.remove()
    after = _processors(sd_pipe.unet)
    assert all(after[k] is before[k] for k in before)


def test_aggregate_and_overlay_helpers():
    maps = [{"a": torch.rand(3, 4, 4).half(), "b": torch.rand(3, 8, 8).half()} for _ in range(2)]
    allt = aggregate_attention(maps)
    assert allt.shape == (3, 8, 8)
    one = aggregate_attention(maps, 1, layers=["a"], size=(16, 16))
    assert one.shape == (16, 16)
    expected = torch.nn.functional.interpolate(
        torch.stack([m["a"][1:2].float() for m in maps]), size=(16, 16), mode="bilinear", align_corners=False
    ).mean(0)[0]
    torch.testing.assert_close(one, expected)
    assert aggregate_attention(maps, [0, 2]).shape == (2, 8, 8)
    with pytest.raises(ValueError, match="no captured layer matches"):
        aggregate_attention(maps, 0, layers="zzz")
    with pytest.raises(ValueError, match="capture_attention=True"):
        aggregate_attention([None], 0)
    with pytest.raises(ValueError, match="not stored"):
        aggregate_attention(maps, 7)
    img = overlay(np.zeros((16, 16, 3), np.float32), torch.rand(4, 4), alpha=0.4)
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8 and img.max() > 0
    with pytest.raises(ValueError, match="alpha"):
        overlay(np.zeros((4, 4, 3)), torch.rand(2, 2), alpha=2)
