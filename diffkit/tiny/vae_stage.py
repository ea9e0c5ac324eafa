"""The ``vae`` stage: an ``AutoencoderKL`` (f = 8, 4 channels) trained on drawn world images
(L1 + MSE + a small KL term + a linear-preview term), or the shipped VAE taken as it is."""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
from pathlib import Path

import torch

from diffkit.tiny import data as _d
from diffkit.tiny import losses as L
from diffkit.tiny import models as _m
from diffkit.tiny.loop import RunningMean, load_checkpoint, save_checkpoint, train_loop
from diffkit.tiny.recipe import Recipe, seed_for

from ..errors import StateError

__all__ = ["copy_package_vae", "save_reconstructions", "train_vae", "vae_oracle_accuracy"]

log = logging.getLogger("diffkit.tiny.train")


def _new_vae(recipe: Recipe):
    """The initial VAE, its posterior variance tiny (log σ² = −10; quant_conv mixes the moments),
    and the linear preview map trained with it (``None`` without the preview loss)."""
    vae = _m.build_vae(seed_for(recipe, "init"))
    with torch.no_grad():
        c = vae.config.latent_channels
        vae.quant_conv.weight[c:].zero_()
        vae.quant_conv.bias[c:].fill_(-10.0)
    preview = torch.nn.Linear(vae.config.latent_channels, 3) if recipe.vae.preview_weight else None
    return vae, preview


def train_vae(recipe: Recipe, run_dir: Path, *, resume: bool, device: str = "cpu") -> None:
    """Train the VAE into ``run_dir/vae`` (or copy the shipped one: ``cfg.from_package``)."""
    cfg, out, ckpt = recipe.vae, run_dir / "vae", run_dir / "vae_ckpt.pt"
    if (out / "config.json").exists() and not ckpt.exists():
        log.info("vae: finished model found at %s", out)
        return
    if cfg.from_package:
        return copy_package_vae(out)
    vae, preview = _new_vae(recipe)
    # with the preview loss, the checkpoint holds the VAE and the linear map together
    model = torch.nn.ModuleDict({"vae": vae, "preview": preview}) if preview else vae
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    step, rng = 0, random.Random(seed_for(recipe, "vae.batches"))
    if resume and ckpt.exists():
        step, rng = load_checkpoint(ckpt, opt=opt, map_location=device, model=model)
        log.info("vae: resumed at step %d", step)
    vae.train()
    wcfg, loss_avg, prev_avg, t0 = recipe.world_config(), RunningMean(0.95), RunningMean(0.95), [time.time()]

    def batch_loss(step: int) -> torch.Tensor:
        x = _d.world_batch(rng, cfg.batch, wcfg, size=recipe.image_size)[0].to(device)
        post = vae.encode(x).latent_dist
        z = post.sample()
        loss = L.reconstruction_loss(vae.decode(z).sample, x) + cfg.kl * L.kl_loss(post)
        if preview is not None:
            prev_loss = L.preview_loss(preview, z, x, _m.VAE_FACTOR)
            loss = loss + cfg.preview_weight * prev_loss
            prev_avg.add(prev_loss.item())
        batch_loss.latent_std = float(post.mean.detach().std())
        return loss

    def after_step(step: int, loss: torch.Tensor, lr: float) -> None:
        loss_avg.add(loss.item())
        if step % 25 == 0 or step == cfg.steps:
            log.info(
                "vae step %d loss %.4f (preview RMS %.3f) latent std %.3f lr %.2e %.2f s/step",
                step,
                loss_avg.value,
                (prev_avg.value or 0.0) ** 0.5,
                batch_loss.latent_std,
                lr,
                (time.time() - t0[0]) / 25,
            )
            t0[0] = time.time()
        if step % cfg.checkpoint_every == 0:
            save_checkpoint(ckpt, step=step, rng=rng, opt=opt, model=model)

    train_loop(cfg, opt, list(model.parameters()), batch_loss, after_step, step=step)
    vae.eval()
    acc = vae_oracle_accuracy(vae, n=cfg.eval_images, seed=seed_for(recipe, "vae.eval"), size=recipe.image_size)
    log.info("vae: oracle agreement on reconstructions %s", acc)
    save_reconstructions(vae, run_dir / "vae_reconstructions.png", recipe)
    vae.save_pretrained(out, safe_serialization=True)
    ckpt.unlink(missing_ok=True)


def copy_package_vae(out: Path) -> None:
    """The shipped VAE, in float32, as the run's VAE (``VAEConfig.from_package``)."""
    from diffusers import AutoencoderKL

    from diffkit import tiny

    src = tiny.pipeline_path() / "vae"  # names a missing or corrupt weight file and the fix
    vae = AutoencoderKL.from_pretrained(src, torch_dtype=torch.float32)
    if vae.config.sample_size != _m.IMAGE_SIZE:
        raise StateError(
            f"the shipped VAE draws at {vae.config.sample_size}² but the recipe at {_m.IMAGE_SIZE}²; "
            "train its own VAE (a recipe without vae.from_package)"
        )
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    vae.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(out, ignore_errors=True)  # a folder left without its config by a killed run
    os.replace(tmp, out)
    log.info("vae: took the shipped VAE from %s (float32)", src)


@torch.no_grad()
def vae_oracle_accuracy(vae, *, n: int = 200, seed: int = 0, size: int = _m.IMAGE_SIZE) -> dict:
    """Share of reconstructions whose oracle reading matches the drawn truth (one-object images)."""
    from diffkit.tiny import oracle

    x, atts, _ = _d.world_batch(random.Random(seed), n, size=size)
    rec = vae.decode(vae.encode(x.to(vae.device)).latent_dist.mode()).sample.cpu()
    ok = [all(oracle.matches(oracle.read(im), a).values()) for im, a in zip(_d.tensor_to_images(rec), atts)]
    return {"n": n, "all_attributes_right": sum(ok) / n}


@torch.no_grad()
def save_reconstructions(vae, path: Path, recipe: Recipe, n: int = 8) -> None:
    """A PNG to look at: drawn images (top row) over their VAE reconstructions (bottom row)."""
    rng = random.Random(seed_for(recipe, "vae.reconstructions"))
    x, _, _ = _d.world_batch(rng, n, recipe.world_config(), size=recipe.image_size)
    rec = vae.decode(vae.encode(x.to(vae.device)).latent_dist.mode()).sample.cpu()
    _d.save_grid(_d.tensor_to_images(x) + _d.tensor_to_images(rec), n, path)
