"""Flux in the reverse chain: the tiny pipelines, exact equality with ``pipe()`` in every guidance
mode, packed latents, and the attention of both kinds of block against a hand computation."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from diffkit.images import pack_latents, unpack_latents
from diffkit.reverse import ReverseChain, aggregate_attention

PROMPT = "a woman pilot at work"


@pytest.fixture(scope="module")
def flux_pipe():
    from diffkit.testing import tiny_random_pipeline

    pipe = tiny_random_pipeline("flux")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def schnell_pipe():
    from diffkit.testing import tiny_random_pipeline

    pipe = tiny_random_pipeline("flux-schnell")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _chain(pipe, **kw):
    kw.setdefault("steps", 3)
    kw.setdefault("seed", 2)
    if "image" not in kw:
        kw.setdefault("height", 32)
        kw.setdefault("width", 32)
    return ReverseChain(pipe, PROMPT, record_dtype=torch.float32, **kw)


def test_tiny_flux_is_built_offline_in_seconds_and_round_trips(tmp_path, ref):
    from diffkit import load_pipeline
    from diffkit.testing import save_tiny_random_pipeline, tiny_random_pipeline

    tiny_random_pipeline("flux")  # imports warmed up
    t0 = time.perf_counter()
    pipe = tiny_random_pipeline("flux")
    assert time.perf_counter() - t0 < 20
    assert pipe.transformer.config.guidance_embeds and not pipe.transformer.training
    assert not pipe.text_encoder_2.training  # T5's dropout off: two calls agree
    assert pipe.tokenizer_2.convert_ids_to_tokens(pipe.tokenizer_2(PROMPT).input_ids) == [
        "▁a",
        "▁woman",
        "▁pilot",
        "▁at",
        "▁work",
        "</s>",
    ]
    a = ref(pipe, PROMPT, steps=2, guidance_scale=3.5)
    np.testing.assert_array_equal(a, ref(pipe, PROMPT, steps=2, guidance_scale=3.5))
    folder = save_tiny_random_pipeline(tmp_path / "flux", "flux")
    loaded = load_pipeline(folder, device="cpu")
    assert type(loaded).__name__ == "FluxPipeline" and not loaded.text_encoder_2.training
    np.testing.assert_array_equal(ref(loaded, PROMPT, steps=2, guidance_scale=3.5), a)
    schnell = tiny_random_pipeline("flux-schnell")
    assert not schnell.transformer.config.guidance_embeds
    assert not schnell.scheduler.config.use_dynamic_shifting and pipe.scheduler.config.use_dynamic_shifting


@pytest.mark.parametrize("w", [3.5, 6.0])
def test_distilled_guidance_equals_pipeline(flux_pipe, ref, w):
    expected = ref(flux_pipe, PROMPT, steps=3, guidance_scale=w, seed=2)
    chain = _chain(flux_pipe, guidance_scale=w)
    assert not chain.do_cfg
    traj = chain.run()
    np.testing.assert_array_equal(traj.image, expected)
    assert traj.info["family"] == "flux" and traj.info["guidance_embedded"]
    for r in traj:
        assert r.guidance == "embedded" and r.noise_pred_uncond is None and r.guidance_scale == w
        assert "guidance embedded" in r.guidance_label and r.prediction_symbol == "v̂"
        assert tuple(r.latents.shape) == (1, 16, 16)  # unpacked: one channel, 32/2 pixels a side
        torch.testing.assert_close(r.pred_original_sample, r.latents - r.sigma * r.noise_pred)  # x̂₀ = x_t − σ v̂
        torch.testing.assert_close(r.noise_pred, r.noise_pred_text)  # one call: the output is the guided one
    assert [r.sigma for r in traj] == sorted((r.sigma for r in traj), reverse=True)


def test_distilled_scales_differ_and_dynamic_shift_follows_the_token_count(flux_pipe):
    a, b = _chain(flux_pipe, guidance_scale=3.5).run(), _chain(flux_pipe, guidance_scale=6.0).run()
    assert not np.array_equal(a.image, b.image)  # the embedding changes the prediction
    small = _chain(flux_pipe, steps=3, height=32, width=32)
    large = _chain(flux_pipe, steps=3, height=64, width=64)
    # μ grows with the image's token count: the larger image stays noisier at the same step
    assert large.timesteps[1] > small.timesteps[1]
    small.close(), large.close()


def test_true_cfg_equals_pipeline_and_is_split_like_sd(flux_pipe, ref):
    kw = dict(guidance_scale=3.5, true_cfg_scale=4.0, negative_prompt="a man")
    expected = ref(flux_pipe, PROMPT, steps=3, seed=2, **kw)
    chain = _chain(flux_pipe, **kw)
    assert chain.do_cfg
    traj = chain.run()
    np.testing.assert_array_equal(traj.image, expected)
    for r in traj:
        assert r.guidance == "embedded+cfg" and r.true_cfg_scale == 4.0
        torch.testing.assert_close(r.noise_pred, r.noise_pred_uncond + 4.0 * (r.noise_pred_text - r.noise_pred_uncond))
    # without a negative prompt true CFG is off, as in diffusers
    assert not _chain(flux_pipe, true_cfg_scale=4.0).do_cfg


def test_schnell_has_no_guidance_and_equals_pipeline(schnell_pipe, ref):
    expected = ref(schnell_pipe, PROMPT, steps=2, guidance_scale=0.0, seed=2)
    traj = _chain(schnell_pipe, steps=2, guidance_scale=0.0).run()
    np.testing.assert_array_equal(traj.image, expected)
    assert {r.guidance for r in traj} == {"off"}
    kw = dict(true_cfg_scale=3.0, negative_prompt="a man", guidance_scale=0.0)
    np.testing.assert_array_equal(
        _chain(schnell_pipe, steps=2, **kw).run().image, ref(schnell_pipe, PROMPT, steps=2, seed=2, **kw)
    )


def test_flux_img2img_equals_img2img_pipeline(flux_pipe, ref):
    from diffusers import FluxImg2ImgPipeline

    from diffkit import sample_image

    i2i = FluxImg2ImgPipeline.from_pipe(flux_pipe)
    i2i.set_progress_bar_config(disable=True)
    image = sample_image("chelsea", 32)
    expected = ref(i2i, PROMPT, steps=4, guidance_scale=3.5, seed=2, image=image, strength=0.5)
    traj = _chain(flux_pipe, steps=4, guidance_scale=3.5, image=image, strength=0.5).run()
    assert len(traj) == 2 and traj.info["img2img"]
    np.testing.assert_array_equal(traj.image, expected)


def test_recorded_latents_are_the_pipeline_tokens_unpacked(flux_pipe):
    seen = []
    hook = flux_pipe.transformer.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["hidden_states"].clone()), with_kwargs=True
    )
    try:
        traj = _chain(flux_pipe, steps=2).run()
    finally:
        hook.remove()
    for rec, tokens in zip(traj, seen):
        torch.testing.assert_close(pack_latents(rec.latents[None]), tokens, rtol=0, atol=0)
    z = torch.randn(2, 3, 6, 8)
    assert torch.equal(unpack_latents(pack_latents(z), (3, 4)), z)
    with pytest.raises(ValueError, match="fix: use an even latent height"):
        pack_latents(torch.zeros(1, 1, 5, 4))


def test_maps_from_double_and_single_stream_blocks(flux_pipe):
    chain = _chain(flux_pipe, steps=2, capture_attention=True, max_sequence_length=16)
    traj = chain.run()
    n = chain.tokens.n_tokens
    assert chain.tokens.words == ("a", "woman", "pilot", "at", "work", "</s>") and chain.tokens.n_start == 0
    assert chain.tokens.first_content_position == 1  # "woman"
    for r in traj:
        assert sorted(r.attention) == ["single_transformer_blocks.0.attn", "transformer_blocks.0.attn"]
        for m in r.attention.values():
            assert tuple(m.shape) == (n, 8, 8)  # one map per T5 token on the 8×8 token grid
            assert float(m.float().sum(0).max()) <= 1.0 + 1e-3 and float(m.min()) >= 0
    woman = aggregate_attention(traj, chain.tokens.index("woman"), size=(32, 32))
    assert tuple(woman.shape) == (32, 32)
    plain = _chain(flux_pipe, steps=2, max_sequence_length=16).run()
    np.testing.assert_array_equal(plain.image, traj.image)  # capturing changes nothing


def _rms(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _rope(x, cos, sin):
    """Flux's rotary embedding by hand: pairs (x₀, x₁) rotated by the position's angle."""
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return x * cos[None, :, None, :] + rotated * sin[None, :, None, :]


@pytest.mark.parametrize("block", ["single_transformer_blocks.0.attn", "transformer_blocks.0.attn"])
def test_shares_match_a_hand_computation_on_one_block(flux_pipe, block):
    """One transformer call; the layer's inputs are caught, the softmax is computed by hand, and
    (1) the recorded shares are its image→text part, (2) softmax · V is the layer's own output."""
    from diffkit.reverse.attention import CrossAttentionStore
    from diffkit.reverse.flux_attention import capture_flux_attention, flux_attention_layers

    tr = flux_pipe.transformer
    attn = dict(tr.named_modules())[block]
    caught = {}
    hook = attn.register_forward_hook(lambda m, a, kw, out: caught.update(kw=kw, out=out), with_kwargs=True)
    g = torch.Generator().manual_seed(0)
    t_len, n_img = 7, 16
    kwargs = dict(
        hidden_states=torch.randn(1, n_img, 4, generator=g),
        timestep=torch.tensor([0.6]),
        guidance=torch.tensor([3.5]),
        pooled_projections=torch.randn(1, 32, generator=g),
        encoder_hidden_states=torch.randn(1, t_len, 32, generator=g),
        txt_ids=torch.zeros(t_len, 3),
        img_ids=torch.tensor([[0, i // 4, i % 4] for i in range(n_img)], dtype=torch.float32),
    )
    store = CrossAttentionStore(5, (4, 4), slice(0, 1), dtype=torch.float32)
    try:
        with torch.no_grad(), capture_flux_attention(store, flux_attention_layers(tr), text_len=t_len):
            tr(**kwargs)
    finally:
        hook.remove()
    hs, ehs = caught["kw"]["hidden_states"], caught["kw"].get("encoder_hidden_states")
    cos, sin = caught["kw"]["image_rotary_emb"]
    heads, d = attn.heads, attn.head_dim

    def qkv(x, q, k, v, nq, nk):
        split = lambda y: y.view(1, -1, heads, d)  # noqa: E731
        return (_rms(split(q(x)), nq.weight, nq.eps), _rms(split(k(x)), nk.weight, nk.eps), split(v(x)))

    q, k, v = qkv(hs, attn.to_q, attn.to_k, attn.to_v, attn.norm_q, attn.norm_k)
    if ehs is not None:  # joint block: the text's own projections, text first
        tq, tk, tv = qkv(ehs, attn.add_q_proj, attn.add_k_proj, attn.add_v_proj, attn.norm_added_q, attn.norm_added_k)
        q, k, v = torch.cat([tq, q], 1), torch.cat([tk, k], 1), torch.cat([tv, v], 1)
    q, k = _rope(q, cos, sin), _rope(k, cos, sin)
    p = torch.einsum("bqhd,bkhd->bhqk", q, k).div(d**0.5).softmax(-1)  # (1, heads, T + N, T + N)
    with torch.no_grad():
        mine = (p @ v.transpose(1, 2)).transpose(1, 2).flatten(2)  # softmax · V, heads joined
        layer_out = caught["out"][0] if isinstance(caught["out"], tuple) else caught["out"]
        if ehs is not None:
            mine = attn.to_out[0](mine[:, t_len:])
        torch.testing.assert_close(mine[:, -n_img:], layer_out[:, -n_img:], atol=1e-5, rtol=1e-4)
    hand = p[0, :, t_len:, :5].mean(0)  # image rows, the first 5 text columns, heads averaged
    got = store.maps[block]  # (5, 4, 4)
    torch.testing.assert_close(got.reshape(5, -1).t(), hand, atol=1e-6, rtol=1e-5)
    # the rest of each row goes to the other text tokens and to the image tokens: one unit in all
    rest = p[0, :, t_len:, 5:].mean(0).sum(-1)
    torch.testing.assert_close(hand.sum(-1) + rest, torch.ones(n_img))


def test_flux_options_are_checked(flux_pipe, sd_pipe):
    with pytest.raises(ValueError, match="true_cfg_scale and max_sequence_length apply to Flux"):
        ReverseChain(sd_pipe, PROMPT, true_cfg_scale=3.0, height=32, width=32)
    with pytest.raises(ValueError, match="eta and guidance_rescale apply to SD and SDXL"):
        ReverseChain(flux_pipe, PROMPT, eta=0.5, height=32, width=32)
    with pytest.raises(ValueError, match="not a multiple of the VAE factor 4"):
        ReverseChain(flux_pipe, PROMPT, height=34, width=32)
    with pytest.raises(ValueError, match="max_sequence_length=600 is out of range"):
        ReverseChain(flux_pipe, PROMPT, max_sequence_length=600, height=32, width=32)
