"""What the recorder reads at each step: the unscaled x_t, the denoiser's outputs, the attention maps
and the scheduler's step, made into one :class:`~diffkit.reverse.records.StepRecord`.

:class:`StepReader` is the reading half of :class:`~diffkit.reverse.recorder.Recorder` (the other
half is the gate and the worker thread); it uses the recorder's state (``family``, ``grid``,
``trajectory``, the step in flight) and acts only in the chain's thread (``_mine``).
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any

import torch

from .steps import make_record, scheduler_stage

__all__ = ["StepReader"]


class StepReader:
    """The reading half of the recorder (a mixin: :class:`~diffkit.reverse.recorder.Recorder` sets its state)."""

    def _wrap_scale(self, scale: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        @functools.wraps(scale)
        def scale_model_input(sample: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if self._mine():
                self._unscaled = sample[:1]
            return scale(sample, *args, **kwargs)

        return scale_model_input

    def _after_call(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        if not self._mine():
            return None
        self._outputs.append(output[0] if isinstance(output, tuple) else output.sample)
        if self.capture_attention and self._store is not None:
            self._maps = types.MappingProxyType(self._store.pop())
            self._store = None
            self._restore_attention()
        return None

    def _install_attention(self, x_in: torch.Tensor, kwargs: dict) -> None:
        if self._attn is None:
            self._attn = self.family.attention_layers(self.denoiser)
        self._store = self.family.attention_store(self.n_tokens, self.latents, x_in, self.grid)
        self._capture.enter_context(self.family.capture(self.denoiser, self._store, self._attn, kwargs))

    def _restore_attention(self) -> None:
        self._capture.close()

    # -- one record per scheduler step -------------------------------------------------------
    def _wrap_step(self, step: Callable[..., Any]) -> Callable[..., Any]:
        # functools.wraps keeps step's signature visible: pipelines inspect it to decide
        # whether to pass ``generator`` and ``eta``
        @functools.wraps(step)
        def wrapped(
            model_output: torch.Tensor,
            timestep: Any,
            sample: torch.Tensor,
            *args: Any,
            return_dict: bool = True,
            **kwargs: Any,
        ) -> Any:
            if not self._mine():
                return step(model_output, timestep, sample, *args, return_dict=return_dict, **kwargs)
            stage = scheduler_stage(self.scheduler)
            out = step(model_output, timestep, sample, *args, return_dict=True, **kwargs)
            self._record(model_output, timestep, sample, out, stage)
            return out if return_dict else out.to_tuple()

        return wrapped

    def _record(self, noise_pred: torch.Tensor, t: Any, latents: torch.Tensor, out: Any, stage: str) -> None:
        fam, grid = self.family, self.grid
        outputs = [fam.to_grid(o, grid) for o in self._outputs]
        split = fam.split(outputs) if outputs else None
        guidance = fam.guidance(self.denoiser, split is not None and split[0] is not None)
        seen = types.SimpleNamespace(
            prev_sample=fam.to_grid(out.prev_sample, grid),
            pred_original_sample=getattr(out, "pred_original_sample", None),
        )
        if seen.pred_original_sample is not None:
            seen.pred_original_sample = fam.to_grid(seen.pred_original_sample, grid)
        rec, x0 = make_record(
            index=len(self.trajectory),
            n_steps=len(self.timesteps),
            t=t,
            stage=stage,
            latents=fam.to_grid(latents, grid),
            noise_pred=fam.to_grid(noise_pred, grid),
            output=split,
            step_output=seen,
            scheduler=self.scheduler,
            flow=fam.flow,
            sigma_scaled=self.sigma_scaled,
            prediction_type=self.prediction_type,
            guidance_scale=float(self.call_kwargs["guidance_scale"]),
            guidance=guidance,
            true_cfg_scale=self.call_kwargs.get("true_cfg_scale"),
            record_dtype=self.record_dtype,
            prev_x0=self._prev_x0,
            prev_latents=self._prev_latents,
            attention=self._maps,
        )
        self._outputs, self._calls = [], 0
        self._maps = None
        self._prev_x0 = x0
        self._prev_latents = rec.prev_sample
        with self._cond:
            self.latents = seen.prev_sample
            self.trajectory.add(rec)
            on_record = self._on_record
            self._cond.notify_all()
        if on_record is not None:
            on_record(rec)
