"""The one training loop of diffkit-tiny's stages, in nanoGPT's shape, with checkpoint/resume,
EMA and the run's log.

Every stage (VAE, U-Net, polish, the judges) is :func:`train_loop` with its own ``batch_loss``:
learning rate from :func:`diffkit.tiny.recipe.get_lr`, a batch and its loss, backward, the
gradient's norm clipped to 1, an AdamW step, then the stage's ``after_step`` (EMA, logging,
checkpoints, exports).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel

from diffkit.tiny.data import atomic_save
from diffkit.tiny.recipe import get_lr

from ..errors import StateError

__all__ = ["RunningMean", "ema_model", "load_checkpoint", "save_checkpoint", "setup_run", "train_loop"]

log = logging.getLogger("diffkit.tiny.train")


def setup_run(run_dir: Path) -> None:
    """Make *run_dir*, set torch's threads, and log to the console and ``run_dir/train.log``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    # On a shared 2-core machine one thread beat two (OpenMP barriers stall under load).
    torch.set_num_threads(int(os.environ.get("DIFFKIT_THREADS", "2")))
    torch.set_flush_denormal(True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    root = logging.getLogger("diffkit.tiny")
    root.setLevel(logging.INFO)
    log_file = str((run_dir / "train.log").resolve())
    for h in list(root.handlers):  # one run's log per process: a second run dir gets its own
        if isinstance(h, logging.FileHandler) and h.baseFilename != log_file:
            root.removeHandler(h)
            h.close()
    if not any(isinstance(h, logging.FileHandler) for h in root.handlers):
        fh = logging.FileHandler(log_file)
        fh.setFormatter(fmt)
        root.addHandler(fh)
    if not any(type(h) is logging.StreamHandler for h in root.handlers):
        sh = logging.StreamHandler()
        sh.setFormatter(fmt)
        root.addHandler(sh)


def train_loop(
    cfg,
    opt: torch.optim.Optimizer,
    params: list,
    batch_loss: Callable[[int], torch.Tensor],
    after_step: Callable[[int, torch.Tensor, float], None],
    *,
    step: int = 0,
    deadline: float | None = None,
) -> int:
    """Train from *step* to ``cfg.steps`` (or until *deadline*, a ``time.time()``); returns the
    step reached."""
    while step < cfg.steps and (deadline is None or time.time() < deadline):
        # 1. the learning rate of this step
        lr = get_lr(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        # 2. a batch and its loss
        loss = batch_loss(step)
        # 3. backward, the gradient's norm clipped to 1, one AdamW step
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        # 4. EMA, logs, checkpoints, exports
        after_step(step, loss, lr)
    return step


def ema_model(model: torch.nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of *model*'s parameters (``torch.optim.swa_utils``), started
    at its current weights, with diffusers' warm-up: after n updates the decay is
    min(decay, (1 + n) / (10 + n)) (``EMAModel.get_decay`` without ``use_ema_warmup``).

    The update is ``torch.lerp(ema, p, 1 − decay)``, the float weight taken from the count, which
    reproduces the shipped recipe's EMA bit for bit (``get_ema_multi_avg_fn`` has a fixed decay,
    and diffusers' ``EMAModel`` subtracts ``(1 − decay)(ema − p)``, which rounds differently).
    """

    def average(ema: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        k = int(n)
        return torch.lerp(ema, p, 1 - min(decay, (1 + k) / (10 + k)))

    ema = AveragedModel(model, avg_fn=average)
    ema.update_parameters(model)  # the first update copies the weights
    return ema.eval()


class RunningMean:
    """An exponential moving average of logged numbers (the first value starts it)."""

    def __init__(self, keep: float) -> None:
        self.keep, self.value = keep, None

    def add(self, x: float) -> None:
        self.value = x if self.value is None else self.keep * self.value + (1 - self.keep) * x


def save_checkpoint(path: Path, *, step: int, rng: random.Random, opt, config=None, gen=None, **modules) -> None:
    """A resumable checkpoint (atomically): each module's state, the optimizer's, the step, the
    random streams (Python's, the stage's torch generator and torch's global one) and the config."""
    state = {name: m.state_dict() for name, m in modules.items()}
    state |= {"opt": opt.state_dict(), "step": step, "rng": rng, "torch_rng": torch.get_rng_state()}
    if gen is not None:
        state["gen"] = gen.get_state()
    if config is not None:
        state["config"] = asdict(config)
    atomic_save(state, path)


def load_checkpoint(
    path: Path, *, opt, config=None, gen=None, map_location=None, **modules
) -> tuple[int, random.Random]:
    """Restore a :func:`save_checkpoint`; returns ``(step, rng)``. A checkpoint of another config
    (apart from its step bound: a longer run may resume) is refused."""
    s = torch.load(path, weights_only=False, map_location=map_location)
    if config is not None and "config" in s:
        now = {k: v for k, v in asdict(config).items() if k != "steps"}
        diff = {k: (s["config"].get(k), v) for k, v in now.items() if s["config"].get(k, v) != v}
        if diff:
            raise StateError(
                f"{path} was trained with another recipe (saved, now): {diff}; resume with the "
                "same --quick, or use another --run-dir"
            )
    for name, m in modules.items():
        m.load_state_dict(s[name])
    opt.load_state_dict(s["opt"])
    if gen is not None:
        gen.set_state(s["gen"].cpu())  # map_location moved it with the weights
    if "torch_rng" in s:
        torch.set_rng_state(s["torch_rng"].cpu())
    return s["step"], s["rng"]
