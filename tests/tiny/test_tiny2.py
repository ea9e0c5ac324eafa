"""diffkit-tiny 2 (issue 11): SD 1.x's design at 128², its world and its recipe, on toy budgets."""

from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
import torch

from diffkit.tiny import data as D
from diffkit.tiny import losses as L
from diffkit.tiny import models as M
from diffkit.tiny import recipe as R
from diffkit.tiny import train as T
from diffkit.tiny import world as W
from diffkit.tiny.cache import build_cache
from diffkit.tiny.loop import setup_run
from diffkit.tiny.unet_stage import train_polish, train_unet
from diffkit.tiny.vae_stage import train_vae

# ----------------------------------------------------------------------------- the world at 128²


@pytest.mark.parametrize(
    "a",
    [
        W.Attributes("shape", color="green", shape="triangle"),
        W.Attributes("person", occupation="firefighter", gender="woman"),
        W.Attributes("pair", color="red", shape="circle", color2="blue", shape2="square"),
    ],
    ids=["shape", "person", "pair"],
)
def test_world_draws_at_128_the_same_layout_as_at_64(a):
    big = np.asarray(W.draw(a, random.Random(5), size=128))
    small = np.asarray(W.draw(a, random.Random(5), size=64))
    assert big.shape == (128, 128, 3) and small.shape == (64, 64, 3)
    # the same random draws place the figure: the 128² image shrunk is the 64² one, up to edges
    shrunk = big.reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
    assert np.mean(np.abs(shrunk - small.astype(float)).max(-1) > 60) < 0.05
    assert (np.asarray(W.draw(a, random.Random(5), size=128)) == big).all()  # seeded


def test_world_at_64_is_unchanged_by_the_size_parameter():
    """tiny 1 was trained on these pixels: the default must still draw exactly them."""
    for a in W.all_attributes():
        x = np.asarray(W.draw(a, random.Random(3)))
        y = np.asarray(W.draw(a, random.Random(3), size=64))
        assert (x == y).all()
    with pytest.raises(ValueError, match="size must be one of"):
        W.draw_shape("red", "circle", random.Random(0), size=100)
    with pytest.raises(ValueError, match="unknown color"):
        W.draw_shape("teal", "circle", random.Random(0))


def test_pair_fraction_zero_leaves_the_caption_stream_unchanged():
    a = random.Random(7)
    b = random.Random(7)
    for _ in range(500):
        assert W.sample_attributes(a) == W.sample_attributes(b, W.WorldConfig(pair_fraction=0.0))
    with pytest.raises(ValueError, match="pair_fraction must lie"):
        W.WorldConfig(pair_fraction=1.5)


def test_two_object_scenes_are_drawn_apart_and_captioned_in_either_order():
    cfg = W.WorldConfig(shape_fraction=1.0, pair_fraction=0.3)
    rng = random.Random(0)
    kinds = [W.sample_attributes(rng, cfg)[0].kind for _ in range(4000)]
    assert abs(kinds.count("pair") / 4000 - 0.3) < 0.03
    assert set(kinds) == {"shape", "pair"}
    a = W.Attributes("pair", color="red", shape="circle", color2="blue", shape2="square")
    caps = a.captions()
    assert "a red circle and a blue square" in caps and "a blue square and a red circle" in caps
    assert "a photo of a blue square and a red circle" in caps
    seen_left = set()
    for seed in range(40):
        img, (m1, m2) = W.draw_pair("red", "circle", "blue", "square", random.Random(seed), size=128, layers=True)
        arr = np.asarray(img)
        assert m1.any() and m2.any() and not (m1 & m2).any()
        # each object is painted its own colour, and the rest is white
        assert (arr[m1] == W.COLORS["red"]).all() and (arr[m2] == W.COLORS["blue"]).all()
        assert (arr[~(m1 | m2)] == 255).all()
        seen_left.add(np.where(m1.any(0))[0].mean() < np.where(m2.any(0))[0].mean())
        # the plain drawing is the same image
        assert (np.asarray(W.draw(a, random.Random(seed), size=128)) == arr).all()
    assert seen_left == {True, False}  # the first-named object is not always on the left
    # the pair's two colours always differ
    for _ in range(300):
        p = W.sample_attributes(rng, W.WorldConfig(shape_fraction=1.0, pair_fraction=1.0))[0]
        assert p.kind == "pair" and p.color != p.color2


def test_latent_masks_at_factor_8_cover_both_objects():
    a = W.Attributes("pair", color="yellow", shape="cross", color2="purple", shape2="circle")
    img, (m1, m2) = W.draw_pair(a.color, a.shape, a.color2, a.shape2, random.Random(1), size=128, layers=True)
    m = D.latent_masks([img], [a], factor=8)
    assert m.shape == (1, 1, 16, 16)
    up = m[0, 0].repeat_interleave(8, 0).repeat_interleave(8, 1).numpy().astype(bool)
    assert up[m1].all() and up[m2].all()
    assert D.cell_key(a) == ("pair",)


# ----------------------------------------------------------------------------- the configs


def test_tiny2_is_sd15s_geometry_and_scheduler():
    from diffusers import DDIMScheduler, PNDMScheduler

    assert M.IMAGE_SIZE == 128 and M.VAE_FACTOR == 8
    vae = M.build_vae()
    unet = M.build_unet()
    x = torch.zeros(1, 3, 128, 128)
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
    assert z.shape == (1, 4, 16, 16)
    assert unet.config.sample_size * 8 == 128 and unet.config.in_channels == 4
    # the folder's default scheduler is SD 1.5's, key for key
    sched = M.build_scheduler()
    assert isinstance(sched, PNDMScheduler)
    sd15 = {
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": False,
        "num_train_timesteps": 1000,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "trained_betas": None,
    }
    assert {k: sched.config[k] for k in sd15} == sd15
    assert sched.config.prediction_type == "epsilon"
    # a DDIM built from it (as the explorers swap samplers) keeps clip_sample off
    assert DDIMScheduler.from_config(sched.config).config.clip_sample is False
    train = M.build_train_scheduler()
    assert train.config.prediction_type == "epsilon"
    torch.testing.assert_close(train.alphas_cumprod, sched.alphas_cumprod)
    # SD's ᾱ at the last step: terminal SNR about 0.0047, not zero
    snr_T = float(train.alphas_cumprod[-1] / (1 - train.alphas_cumprod[-1]))
    assert 0.004 < snr_T < 0.006


def test_tiny2_takes_77_tokens_of_clips_vocabulary(tmp_path):
    tok = M.build_tokenizer(tmp_path / "tok")
    te = M.build_text_encoder()
    assert tok.model_max_length == 77 and len(tok) == 49408
    assert te.config.max_position_embeddings == 77
    ids = tok(["a red circle and a blue square"], padding="max_length", return_tensors="pt").input_ids
    assert ids.shape == (1, 77)
    with torch.no_grad():
        assert te(ids)[0].shape == (1, 77, M.UNET_CONFIG["cross_attention_dim"])


def test_tiny2_text_enters_only_through_cross_attention():
    """No pooled-text path: changing the text can change the output only via attn2/encoder states."""
    unet = M.build_unet().eval()
    cfg = unet.config
    assert cfg.addition_embed_type is None and cfg.class_embed_type is None
    assert cfg.encoder_hid_dim is None and not cfg.only_cross_attention
    assert getattr(unet, "add_embedding", None) is None and unet.class_embedding is None
    # cross-attention at 16×16 (the first down block and the last up block) and lower
    assert cfg.down_block_types[0] == "CrossAttnDownBlock2D"
    assert cfg.up_block_types[-1] == "CrossAttnUpBlock2D"
    cross = [n for n, m in unet.named_modules() if getattr(m, "is_cross_attention", False)]
    assert any(n.startswith("down_blocks.0.") for n in cross)
    assert any(n.startswith("mid_block.") for n in cross)
    # SD's transformer block: self-attention (attn1) then cross-attention (attn2)
    blk = unet.down_blocks[0].attentions[0].transformer_blocks[0]
    assert not blk.attn1.is_cross_attention and blk.attn2.is_cross_attention
    # with every cross-attention's output zeroed, the text has no way in
    torch.manual_seed(0)
    for p in unet.parameters():  # the stock init zeroes proj_out; give it weights
        p.data.normal_(0, 0.05)
    x, t = torch.randn(1, 4, 16, 16), torch.tensor(500)
    h1, h2 = torch.randn(1, 77, 64), torch.randn(1, 77, 64)
    with torch.no_grad():
        assert not torch.allclose(unet(x, t, h1).sample, unet(x, t, h2).sample)
        for m in unet.modules():
            if getattr(m, "is_cross_attention", False):
                m.to_out[0].weight.zero_()
                m.to_out[0].bias.zero_()
        torch.testing.assert_close(unet(x, t, h1).sample, unet(x, t, h2).sample)


def test_scaling_factor_gives_unit_variance():
    z = torch.randn(500, 4, 16, 16) * 5.3 + 0.2
    s = M.scaling_factor(z)
    assert abs(float((z * s).std()) - 1.0) < 1e-5
    assert abs(s - 1 / 5.3) < 0.01
    with pytest.raises(ValueError, match="retrain it"):
        M.scaling_factor(torch.zeros(2, 4, 16, 16))


def test_eps_loss_weight_is_the_x0_weight_divided_by_snr():
    snr = torch.tensor([0.0047, 0.05, 0.5, 1.0, 4.0, 10.0, 1175.0])
    r = R.TINY2.unet
    w = L.loss_weights(snr, r)
    x0 = (snr + 1).clamp(max=r.min_snr_gamma)
    torch.testing.assert_close(w, (x0 / snr).clamp(max=r.eps_weight_cap))
    assert float(w[0]) == r.eps_weight_cap  # capped at SD's terminal step
    assert float(w[-1]) < 0.01  # near-clean steps weigh little, as min-SNR's do


def test_eps_weight_floor_gives_l_simple_at_low_noise():
    from dataclasses import replace

    snr = torch.tensor([0.0047, 1.0, 4.0, 10.0, 1175.0])
    floored = L.loss_weights(snr, replace(R.TINY2.unet, eps_weight_floor=1.0))
    plain = L.loss_weights(snr, R.TINY2.unet)
    assert torch.equal(floored, plain.clamp(min=1.0))
    assert float(floored[-1]) == 1.0 and float(plain[-1]) < 0.01  # L_simple's weight at low noise
    assert float(floored[0]) == R.TINY2.unet.eps_weight_cap  # the high-noise cap is untouched


def test_recipes_are_bounded():
    for r in (R.TINY2, R.TINY2_QUICK):
        assert r.image_size == 128 and r.pair_fraction > 0
        assert 0 < r.unet.steps <= 6000 and r.cache.pairs > 0
    assert R.TINY2_QUICK.unet.steps < R.TINY2.unet.steps
    with pytest.raises(SystemExit):
        T.main(["--recipe", "tiny1", "--stage", "export"])  # diffkit-tiny 1's recipe left the tree
    with pytest.raises(SystemExit):
        T.main(["--quick", "--stage", "export"])  # the classroom model never replaces the shipped one
    assert R.TINY2_QUICK.vae.from_package and not R.TINY2.vae.from_package


def test_the_quick_recipe_takes_the_shipped_vae(tmp_path):
    from diffusers import AutoencoderKL

    from diffkit import tiny

    setup_run(tmp_path)
    train_vae(R.TINY2_QUICK, tmp_path, resume=False)
    got = AutoencoderKL.from_pretrained(tmp_path / "vae")
    shipped = AutoencoderKL.from_pretrained(tiny.pipeline_path() / "vae")
    assert got.dtype == torch.float32
    assert list(got.state_dict()) == list(shipped.state_dict())
    for (name, a), b in zip(got.state_dict().items(), shipped.state_dict().values()):
        assert torch.equal(a, b.float()), name
    assert not (tmp_path / "vae_reconstructions.png").exists()  # nothing was trained


# ----------------------------------------------------------------------------- the recipe


@pytest.mark.slow
def test_tiny2_recipe_end_to_end_and_resume(tmp_path, monkeypatch):
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from PIL import Image

    monkeypatch.setattr("diffkit.tiny.quality.quick_check", lambda pipe, **kw: {"n": 0})
    run = tmp_path / "run"
    setup_run(run)
    q = R.TINY2_QUICK
    rep = dataclasses.replace
    r = rep(
        q,
        # train a VAE (the quick recipe takes the shipped one)
        vae=rep(q.vae, from_package=False, steps=2, batch=2, checkpoint_every=1, eval_images=4),
        cache=R.CacheConfig(per_cell=1, pairs=3),
        unet=rep(q.unet, steps=2, batch=6, checkpoint_every=1, export_every=100),
        polish=rep(q.polish, steps=2, batch=6, checkpoint_every=1, export_every=100, grounding_weight=0.1),
    )
    train_vae(r, run, resume=False)
    assert Image.open(run / "vae_reconstructions.png").size == (8 * 128, 2 * 128)
    build_cache(r, run)
    st = torch.load(run / "latents.pt", weights_only=False)
    n = len(W.all_attributes()) + 3
    assert st["latents"].shape == (n, 4, 16, 16) and st["masks"].shape == (n, 1, 16, 16)
    assert st["arch"] == "tiny2" and len(st["pairs"]) == 3 == len(st["cells"][("pair",)])
    assert all(a.kind == "pair" for a in st["pairs"].values())
    # the stored scaling factor gives the cached latents unit variance
    assert abs(float(st["latents"].float().std()) - 1.0) < 0.01
    from diffusers import AutoencoderKL

    assert AutoencoderKL.from_pretrained(run / "vae").config.scaling_factor == st["scaling_factor"]
    train_unet(r, run, resume=False)
    r = rep(r, unet=rep(r.unet, steps=3))
    train_unet(r, run, resume=True)
    assert "unet: resumed at step 2" in (run / "train.log").read_text()
    with pytest.raises(RuntimeError, match="another recipe"):
        train_unet(rep(r, unet=rep(r.unet, steps=4, offset_noise=0.0)), run, resume=True)
    pipe = StableDiffusionPipeline.from_pretrained(run / "pipeline")
    assert isinstance(pipe.scheduler, PNDMScheduler) and pipe.tokenizer.model_max_length == 77
    # every export carries its fast-preview map, fitted on this VAE, for the explorers
    from diffkit.reverse import latent_rgb

    assert "drawings of the pictogram world" in latent_rgb(pipe.vae).source
    assert "the unet stage's step-3 export" in latent_rgb(pipe.vae).source
    out = pipe(["a red circle and a blue square"], num_inference_steps=2, output_type="np")
    assert out.images.shape == (1, 128, 128, 3)
    # the polish stage continues from the unet stage's final export, kept as unet_stage/
    train_polish(r, run, resume=False)
    assert (run / "unet_stage" / "model_index.json").exists() and (run / "object_masks.pt").exists()
    meta = json.loads((run / "pipeline" / "diffkit_tiny.json").read_text())
    assert (meta["stage"], meta["step"]) == ("polish", 2)
    log = (run / "train.log").read_text()
    assert "polish step" not in log or "token loss" in log
    train_polish(rep(r, polish=rep(r.polish, steps=3)), run, resume=True)
    assert "polish: resumed at step 2" in (run / "train.log").read_text()
    assert json.loads((run / "pipeline" / "diffkit_tiny.json").read_text())["step"] == 3
    # a classroom run exports only where --export-to says, with its preview map and no judge
    dest = tmp_path / "export"
    T.main(["--quick", "--stage", "export", "--run-dir", str(run), "--export-to", str(dest)])
    assert (dest / "pipeline" / "model_index.json").exists() and not (dest / "clip").exists()
    assert "--stage export" in latent_rgb(AutoencoderKL.from_pretrained(dest / "pipeline" / "vae")).source
    # a cache of another architecture is refused
    st["arch"] = "tiny1"
    torch.save(st, run / "latents.pt")
    with pytest.raises(RuntimeError, match="another --run-dir"):
        build_cache(r, run)


# ----------------------------------------------------------------------------- attention bar


def test_word_positions_and_object_mask():
    from PIL import Image

    from diffkit.reverse.text import word_positions
    from diffkit.tiny import quality as Q

    tok = M.build_tokenizer()
    assert word_positions(tok, "a red circle", "red") == [2]
    assert word_positions(tok, "a photo of an orange cross", "cross") == [6]
    with pytest.raises(ValueError, match="not among the tokens"):
        word_positions(tok, "a red circle", "square")
    img = W.draw_shape("yellow", "square", random.Random(0), size=128)
    m = Q.object_mask(img)
    arr = np.asarray(img)
    assert (m == (arr != 255).any(-1)).all() and 0 < m.mean() < 0.6
    assert not Q.object_mask(Image.new("RGB", (8, 8), (250, 250, 250))).any()


def test_attention_localisation_reads_the_maps_of_the_words():
    """On a random pipeline: one row per image and word, inside/outside taken over the mask."""
    from diffkit.testing import tiny_random_pipeline
    from diffkit.tiny import quality as Q

    pipe = tiny_random_pipeline("sd")
    pipe.set_progress_bar_config(disable=True)
    case = [("a red circle", W.Attributes("shape", color="red", shape="circle"))]
    df = Q.attention_localisation(pipe, case, seeds=[0], steps=3, guidance_scale=7.5)
    assert list(df.word) == ["color", "shape"] and list(df.token) == ["red", "circle"]
    for r in df.itertuples():
        if r.mask_pixels:
            assert 0 < r.inside < 1 and 0 < r.outside < 1
            assert r.ratio == pytest.approx(r.inside / r.outside)
        else:
            assert np.isnan(r.ratio)
