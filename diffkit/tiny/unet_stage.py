"""The ``unet`` stage and the ``polish`` stage that continues from its export.

``unet``: the ``UNet2DConditionModel`` *and* the ``CLIPTextModel`` trained jointly, ε-prediction
on SD 1.5's ``scaled_linear`` schedule, min(SNR + 1, 5) / SNR weighting, offset noise, 10 %
caption dropout (for classifier-free guidance), EMA. ``polish``: more steps from the unet stage's
export with the ε weight floored at 1, half the timesteps below 200, the low-noise agreement term
and TokenCompose's token loss (:mod:`diffkit.tiny.grounding`).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from diffkit.tiny import data as _d
from diffkit.tiny import losses as L
from diffkit.tiny import models as _m
from diffkit.tiny import world as _w
from diffkit.tiny.cache import load_cache, object_masks
from diffkit.tiny.export import export_and_eval, exported
from diffkit.tiny.loop import RunningMean, ema_model, load_checkpoint, save_checkpoint, train_loop
from diffkit.tiny.recipe import Recipe, UNetConfig, seed_for

from ..errors import InputError, StateError

__all__ = ["Tokens", "draw_batch", "draw_timesteps", "polish_base", "train_polish", "train_unet"]

log = logging.getLogger("diffkit.tiny.train")


class Tokens:
    """Token ids per caption, computed once (the grammar has a few hundred captions)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.memo: dict[str, torch.Tensor] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        for c in captions:
            if c not in self.memo:
                self.memo[c] = self.tok(
                    c, padding="max_length", max_length=self.tok.model_max_length, truncation=True, return_tensors="pt"
                ).input_ids[0]
        return torch.stack([self.memo[c] for c in captions])


def draw_timesteps(cfg: UNetConfig, n: int, num_train_timesteps: int, gen: torch.Generator) -> torch.Tensor:
    """*n* training timesteps: uniform, except a ``cfg.low_t_fraction`` share drawn from
    ``[0, cfg.low_t_max)``. With no low share the draws are exactly the plain uniform ones."""
    t = torch.randint(0, num_train_timesteps, (n,), generator=gen)
    if cfg.low_t_fraction:
        low = torch.rand(n, generator=gen) < cfg.low_t_fraction
        t = torch.where(low, torch.randint(0, cfg.low_t_max, (n,), generator=gen), t)
    return t


@dataclass
class Batch:
    """One training batch: cached latents x₀, figure masks, noise ε, timesteps t, captions, the
    world's attributes, the cache rows (and the pair rows that replaced pair samples)."""

    x0: torch.Tensor
    masks: torch.Tensor | None
    noise: torch.Tensor
    t: torch.Tensor
    captions: list
    attributes: list
    idx: torch.Tensor
    pair_rows: list | None


def draw_batch(
    cache: _d.LatentCache,
    cfg: UNetConfig,
    wcfg: _w.WorldConfig,
    rng: random.Random,
    gen: torch.Generator,
    num_train_timesteps: int,
) -> Batch:
    """A batch of the world's caption distribution: every random draw is made on the CPU (Python's
    *rng*, then torch's *gen*), so a run on a GPU sees the same numbers."""
    atts, caps = zip(*(_w.sample_attributes(rng, wcfg) for _ in range(cfg.batch)))
    rows = None
    if wcfg.pair_fraction > 0:
        rows, caps = cache.resolve_pairs(rng, list(atts), list(caps))
    caps = [("" if rng.random() < cfg.caption_dropout else c) for c in caps]
    idx = cache.sample_rows(rng, list(atts), rows)
    x0, masks = cache.take(idx)
    noise = torch.randn(x0.shape, generator=gen)
    if cfg.offset_noise:
        # offset noise: a per-image, per-channel constant, so the model can learn to move the
        # image's mean colour, which pure white noise barely lets it change
        noise = noise + cfg.offset_noise * torch.randn((x0.shape[0], x0.shape[1], 1, 1), generator=gen)
    t = draw_timesteps(cfg, x0.shape[0], num_train_timesteps, gen)
    return Batch(x0, masks, noise, t, caps, list(atts), idx, rows)


def polish_base(recipe: Recipe, run_dir: Path) -> Path:
    """The unet stage's final export, kept as ``unet_stage/`` (the polish stage's start)."""
    base = run_dir / "unet_stage"
    if (base / "model_index.json").exists():
        return base
    stage, step = exported(run_dir)
    if (stage, step) != ("unet", recipe.unet.steps):
        raise StateError(
            f"{run_dir / 'pipeline'} is not the unet stage's step-{recipe.unet.steps} export ({stage} "
            f"step {step}); finish `--stage unet` before `--stage polish`"
        )
    tmp = run_dir / "unet_stage.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run_dir / "pipeline", tmp)
    os.replace(tmp, base)
    return base


def train_unet(
    recipe: Recipe, run_dir: Path, *, resume: bool, minutes: float | None = None, device: str = "cpu"
) -> None:
    """The ``unet`` stage: from the initial weights to ``recipe.unet.steps``."""
    _train(recipe, "unet", run_dir, resume=resume, minutes=minutes, device=device)


def train_polish(
    recipe: Recipe, run_dir: Path, *, resume: bool, minutes: float | None = None, device: str = "cpu"
) -> None:
    """The ``polish`` stage: from the unet stage's final export to ``recipe.polish.steps``."""
    if recipe.polish.steps <= 0:
        raise InputError("the recipe has no polish stage (polish.steps = 0)")
    _train(recipe, "polish", run_dir, resume=resume, minutes=minutes, device=device, base=polish_base(recipe, run_dir))


def _models(recipe: Recipe, run_dir: Path, base: Path | None, device: str):
    """``(tokenizer, unet, text encoder)``: initial weights, or those of the export at *base*."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = _m.build_tokenizer(run_dir / "tokenizer")
    unet, te = _m.build_unet(seed_for(recipe, "init")), _m.build_text_encoder(seed_for(recipe, "init"))
    if base is not None:
        unet.load_state_dict(UNet2DConditionModel.from_pretrained(base / "unet").float().state_dict())
        te.load_state_dict(CLIPTextModel.from_pretrained(base / "text_encoder").float().state_dict())
    return tokenizer, unet.to(device), te.to(device)


class _Grounding:
    """The polish stage's token loss: the probe on the U-Net, the cache's object masks, and
    each caption's grounded words (memoised)."""

    def __init__(self, recipe: Recipe, run_dir: Path, cache, unet, tokenizer) -> None:
        from diffkit.tiny import grounding as g

        self.g, self.cache, self.tokenizer, self.memo = g, cache, tokenizer, {}
        self.objects = object_masks(recipe, run_dir, len(cache.latents))
        self.probe = g.GroundingProbe(unet)

    def loss(self, b: Batch, cfg: UNetConfig):
        words = []
        for c, a, r in zip(b.captions, b.attributes, b.pair_rows or [None] * len(b.captions)):
            key = (c, self.cache.pairs[r] if r is not None else a)
            if key not in self.memo:
                self.memo[key] = self.g.word_objects(self.tokenizer, *key)
            words.append(self.memo[key])
        keep = (b.t >= cfg.grounding_min_t) & (b.t < cfg.grounding_max_t)
        return self.g.token_loss(self.probe.pop(), words, self.objects[b.idx], keep=keep)


def _train(recipe: Recipe, stage: str, run_dir: Path, *, resume: bool, minutes, device: str, base=None) -> None:
    run = _DenoiserRun(recipe, stage, run_dir, device, base)
    if resume and run.ckpt.exists():
        run.step, run.rng = load_checkpoint(
            run.ckpt,
            opt=run.opt,
            config=run.cfg,
            gen=run.gen,
            map_location=device,
            unet=run.unet,
            te=run.te,
            ema=run.ema,
        )
        log.info("%s: resumed at step %d", stage, run.step)
    run.run(minutes)


class _DenoiserRun:
    """One run of the unet or polish stage: the models, the optimizer, the EMA, the random streams."""

    def __init__(self, recipe: Recipe, stage: str, run_dir: Path, device: str, base: Path | None) -> None:
        from diffusers import AutoencoderKL

        self.recipe, self.stage, self.run_dir, self.device = recipe, stage, run_dir, device
        self.cfg: UNetConfig = getattr(recipe, stage)
        self.cache = load_cache(run_dir, self.cfg.figure_weight)
        self.tokenizer, self.unet, self.te = _models(recipe, run_dir, base, device)
        self.tokens, self.sched = Tokens(self.tokenizer), _m.build_train_scheduler()
        self.params = list(self.unet.parameters()) + list(self.te.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=self.cfg.lr, weight_decay=0.01, betas=(0.9, 0.99))
        self.both = torch.nn.ModuleDict({"unet": self.unet, "te": self.te})
        self.ema = ema_model(self.both, self.cfg.ema_decay)  # before the probe: the EMA copies no hooks
        self.step, self.rng = 0, random.Random(seed_for(recipe, f"{stage}.batches"))
        self.gen = torch.Generator().manual_seed(seed_for(recipe, f"{stage}.noise"))
        self.ckpt = run_dir / f"{stage}_ckpt.pt"
        self.grounding = None
        if self.cfg.grounding_weight > 0:
            self.grounding = _Grounding(recipe, run_dir, self.cache, self.unet, self.tokenizer)
        self.vae = AutoencoderKL.from_pretrained(run_dir / "vae").eval().to(device)
        self.meters = {k: RunningMean(0.98) for k in ("loss", "token loss", "low-noise gap")}
        self.t_last = time.time()

    def batch_loss(self, step: int) -> torch.Tensor:
        """The stage's objective on one batch: the weighted denoising loss, then the token loss
        and the low-noise gap where the stage weighs them."""
        cfg, dev, b = self.cfg, self.device, self.draw()
        w = L.loss_weights(L.snr(self.sched.alphas_cumprod, b.t), cfg).to(dev)
        x0, noise, t = b.x0.to(dev), b.noise.to(dev), b.t.to(dev)
        masks = b.masks.to(dev) if b.masks is not None else None
        xt = self.sched.add_noise(x0, noise, t)
        hidden = self.te(self.tokens(b.captions).to(dev))[0]
        if self.grounding is not None:
            self.grounding.probe.active = True
        pred = self.unet(xt, t, hidden).sample
        loss = L.figure_weighted_mse(pred, noise, w, masks, cfg.figure_weight)
        if self.grounding is not None:
            self.grounding.probe.active = False
            if (g_loss := self.grounding.loss(b, cfg)) is not None:
                loss = loss + cfg.grounding_weight * g_loss
                self.meters["token loss"].add(g_loss.item())
        if cfg.gap_weight:
            sel = (t < cfg.low_t_max) & torch.tensor([c != "" for c in b.captions], device=t.device)
            if bool(sel.any()):
                empty = self.te(self.tokens([""] * int(sel.sum())).to(dev))[0]
                gap = L.low_noise_gap(pred[sel], self.unet(xt[sel], t[sel], empty).sample)
                loss = loss + cfg.gap_weight * gap
                self.meters["low-noise gap"].add(gap.item())
        return loss

    def draw(self) -> Batch:
        wcfg = self.recipe.world_config()
        return draw_batch(self.cache, self.cfg, wcfg, self.rng, self.gen, self.sched.config.num_train_timesteps)

    def after_step(self, step: int, loss: torch.Tensor, lr: float) -> None:
        """EMA, the log every 25 steps, checkpoints and exports."""
        self.step = step
        self.ema.update_parameters(self.both)
        self.meters["loss"].add(loss.item())
        if step % 25 == 0:
            extra = "".join(
                f" {k} {m.value:.4f}" for k, m in self.meters.items() if k != "loss" and m.value is not None
            )
            log.info(
                "%s step %d loss %.4f%s lr %.1e %.2f s/step",
                self.stage,
                step,
                self.meters["loss"].value,
                extra,
                lr,
                (time.time() - self.t_last) / 25,
            )
            self.t_last = time.time()
        if step % self.cfg.checkpoint_every == 0:
            self.save()
        if step % self.cfg.export_every == 0:
            self.export()
            self.t_last = time.time()

    def save(self) -> None:
        save_checkpoint(
            self.ckpt,
            step=self.step,
            rng=self.rng,
            opt=self.opt,
            config=self.cfg,
            gen=self.gen,
            unet=self.unet,
            te=self.te,
            ema=self.ema,
        )

    def export(self) -> None:
        ema = self.ema.module
        export_and_eval(
            ema["unet"], ema["te"], self.vae, self.tokenizer, self.run_dir, self.recipe, self.step, stage=self.stage
        )

    def run(self, minutes: float | None) -> None:
        """Train to the stage's step bound (or for *minutes*), then checkpoint and export."""
        log.info(
            "%s: U-Net %.2fM params, text encoder %.2fM; config %s",
            self.stage,
            sum(p.numel() for p in self.unet.parameters()) / 1e6,
            sum(p.numel() for p in self.te.parameters()) / 1e6,
            self.cfg,
        )
        self.unet.train()
        self.te.train()
        t0 = self.t_last = time.time()
        deadline = t0 + 60 * minutes if minutes else None
        self.step = train_loop(
            self.cfg, self.opt, self.params, self.batch_loss, self.after_step, step=self.step, deadline=deadline
        )
        self.save()
        if self.grounding is not None:
            self.grounding.probe.remove()
        if exported(self.run_dir) != (self.stage, self.step):
            self.export()
        log.info("%s: stopped at step %d after %.1f min", self.stage, self.step, (time.time() - t0) / 60)
