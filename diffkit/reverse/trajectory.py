"""The trajectory of a reverse chain: its records, its final image, tables, previews and files."""

from __future__ import annotations

import threading
import types
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from .._files import save_pil
from ..errors import InputError, MissingPackageError, StateError, StepIndexError
from .previews import decode_latents, fast_preview, latent_channels, latent_rgb, to_uint8
from .records import LATENT_LIKE, QUANTITIES, StepRecord
from .text import PromptTokens

__all__ = ["Trajectory"]


class Trajectory:
    """The records of a reverse chain, the final image, and ways to look at them.

    Returned by :meth:`ReverseChain.run` (and live as :attr:`ReverseChain.trajectory`).
    Indexing gives :class:`StepRecord` objects; :meth:`to_frame` a tidy table; :meth:`preview`
    one picture of one step; :meth:`save_strip`, :meth:`save_gif` and :meth:`save_mp4` files.
    """

    def __init__(self, work_pipe: Any, info: Mapping[str, Any], tokens: PromptTokens) -> None:
        self._pipe = work_pipe
        self._records: list[StepRecord] = []
        self._cache: dict[tuple[int, str], np.ndarray] = {}
        self._decoding = threading.Lock()  # one VAE decode at a time (an explorer decodes in a thread of its own)
        self._rgb = None
        self.info: Mapping[str, Any] = types.MappingProxyType(dict(info))
        self.tokens = tokens
        self.image: np.ndarray | None = None
        """The final image ``(H, W, 3)`` float32 in ``[0, 1]`` (None until the chain has finished)."""
        self.nsfw: bool | None = None

    # -- filled by the recorder ------------------------------------------------------
    def add(self, record: StepRecord) -> None:
        """Append the next step's record (the recorder calls it as each step ends, in step order)."""
        if record.index != len(self._records):
            raise StateError(
                f"record {record.index} arrived where record {len(self._records)} was due; "
                "fix: records come from one chain, in step order"
            )
        self._records.append(record)

    def finish(self, image: np.ndarray, nsfw: bool | None = None) -> None:
        """Set the final image ``(H, W, 3)`` in [0, 1] (and the safety checker's verdict) once the chain ends."""
        self.image = image
        self.nsfw = nsfw

    # -- sequence protocol ------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i: int) -> StepRecord:
        return self._records[i]

    def __iter__(self) -> Iterator[StepRecord]:
        return iter(list(self._records))

    @property
    def records(self) -> tuple[StepRecord, ...]:
        """All records so far."""
        return tuple(self._records)

    @property
    def complete(self) -> bool:
        """Whether the chain ran to the end (the final image exists)."""
        return self.image is not None

    def __repr__(self) -> str:
        i = self.info
        return (
            f"Trajectory({len(self)} records of {i.get('n_calls')}, {i.get('pipeline')}, "
            f"scheduler={i.get('scheduler')!r}, prompt={i.get('prompt')!r}, complete={self.complete})"
        )

    # -- tables ---------------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """Per-step scalars as a tidy frame: ``step, timestep, sigma, stage, quantity, value``.

        ``value`` is the root-mean-square (‖·‖₂/√n, ≈ 1 for unit Gaussian noise) of, per
        ``quantity``: ``x_t``, ``eps_uncond``, ``eps_text``, ``guidance`` (ε̂_c − ε̂_u), ``eps``,
        ``x0_hat``, ``x_prev``, ``x0_hat_change`` (x̂_0 minus the previous step's x̂_0) and
        ``x_t_vp`` (x_t on the variance-preserving scale). ``cos_eps_text_uncond`` is the cosine
        between ε̂_c and ε̂_u. Computed from the full-precision tensors during the run.
        """
        rows = []
        for r in self._records:
            for q, v in r.stats.items():
                rows.append((r.index, r.timestep, r.sigma, r.stage, q, v))
        return pd.DataFrame(rows, columns=["step", "timestep", "sigma", "stage", "quantity", "value"])

    def steps_frame(self) -> pd.DataFrame:
        """One row per record: ``step, timestep, sigma, alpha_bar, stage, x0_source, prediction_type,
        guidance`` (what the model predicted, and which guidance the step used, from the records)."""
        return pd.DataFrame(
            [
                (r.index, r.timestep, r.sigma, r.alpha_bar, r.stage, r.x0_source, r.prediction_type, r.guidance)
                for r in self._records
            ],
            columns=["step", "timestep", "sigma", "alpha_bar", "stage", "x0_source", "prediction_type", "guidance"],
        )

    def stack(self, quantity: str = "x0_hat", indices: Sequence[int] | None = None) -> torch.Tensor:
        """The tensors of one quantity for the chosen records, ``(n, C, h, w)`` float32."""
        idx = range(len(self)) if indices is None else indices
        xs = [self._records[i].get(quantity) for i in idx]
        if any(x is None for x in xs):
            raise InputError(f"{quantity!r} is not recorded for these steps (guidance ≤ 1 has no unconditional branch)")
        return torch.stack([x.float() for x in xs])

    def nbytes(self, *, attention: bool = False) -> int:
        """Bytes held by the records' tensors, each storage counted once (attention maps if asked)."""
        seen: dict[int, int] = {}
        for r in self._records:
            tensors = [
                r.latents,
                r.noise_pred_uncond,
                r.noise_pred_text,
                r.noise_pred,
                r.pred_original_sample,
                r.prev_sample,
            ]
            if attention and r.attention:
                tensors += list(r.attention.values())
            for t in tensors:
                if t is not None:
                    s = t.untyped_storage()
                    seen[s.data_ptr()] = s.nbytes()
        return sum(seen.values())

    # -- pictures -------------------------------------------------------------------------
    @property
    def latent_rgb(self) -> Any:
        """The latent → RGB map used by fast previews (published or fitted; see :func:`latent_rgb`)."""
        if self._rgb is None:
            self._rgb = latent_rgb(self._pipe)
        return self._rgb

    def decode(
        self, indices: Sequence[int] | None = None, quantity: str = "x0_hat", *, batch_size: int = 4
    ) -> np.ndarray:
        """Exact VAE decodes ``(n, H, W, 3)`` float32 in ``[0, 1]``, batched and cached per (step, quantity).

        *quantity* is a latent-like one: ``"x0_hat"``, ``"x_t"`` (decoded on the
        variance-preserving scale) or ``"x_prev"``.
        """
        name = QUANTITIES.get(quantity, quantity)
        if name not in LATENT_LIKE:
            raise InputError(
                f"only latents decode to images ({[k for k, v in QUANTITIES.items() if v in LATENT_LIKE]}); "
                f"show {quantity!r} with mode='fast' or 'raw'"
            )
        idx = list(range(len(self))) if indices is None else [int(i) for i in indices]
        for i in idx:
            if not -len(self) <= i < len(self):
                raise StepIndexError(
                    f"step {i} is not recorded; fix: pass a step from 0 to {len(self) - 1} (or −1 for the last)"
                )
        idx = [i % len(self) for i in idx]
        if any((i, name) not in self._cache for i in idx):
            with self._decoding:
                todo = [i for i in dict.fromkeys(idx) if (i, name) not in self._cache]  # another thread's may be in
                if todo:
                    lat = torch.stack([self._records[i].vp_latents(name).float() for i in todo])
                    imgs = decode_latents(self._pipe, lat, batch_size=batch_size)
                    for i, im in zip(todo, imgs):
                        self._cache[(i, name)] = im
        return np.stack([self._cache[(i, name)] for i in idx]) if idx else np.zeros((0, 0, 0, 3), np.float32)

    def decoded(self, index: int, quantity: str = "x0_hat") -> bool:
        """Whether step *index*'s exact decode of *quantity* is cached (:meth:`decode`, ``preview(..., "exact")``),
        so that ``preview(index, quantity, "exact")`` returns without running the VAE."""
        n = len(self)
        return -n <= index < n and (index % n, QUANTITIES.get(quantity, quantity)) in self._cache

    def preview(
        self,
        index: int,
        quantity: str = "x0_hat",
        mode: Literal["fast", "exact", "raw"] = "fast",
        *,
        size: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """One picture of one step as ``uint8`` ``(H, W, 3)``.

        Parameters
        ----------
        index
            The record (negative counts from the end).
        quantity
            ``"x_t"``, ``"x0_hat"``, ``"x_prev"``, ``"eps"``, ``"eps_text"``, ``"eps_uncond"``,
            ``"guidance"`` (ε̂_c − ε̂_u).
        mode
            ``"exact"`` (VAE decode, latents only, cached), ``"fast"`` (linear latent → RGB map;
            noise predictions are shown with it too), ``"raw"`` (the channels side by side in grey).
        size
            ``(H, W)`` to upsample fast previews to; default the image size.
        """
        r = self._records[index]
        if mode == "exact":
            return to_uint8(self.decode([index], quantity)[0])
        x = r.vp_latents(quantity) if QUANTITIES.get(quantity, quantity) == "latents" else r.get(quantity)
        if x is None:
            raise InputError(f"{quantity!r} is not recorded for this step (guidance ≤ 1 has no unconditional branch)")
        if mode == "raw":
            g = latent_channels(x)
            return to_uint8(torch.cat(list(g), dim=-1)[None].expand(3, -1, -1))
        if mode != "fast":
            raise InputError(f"mode must be 'fast', 'exact' or 'raw', got {mode!r}")
        if size is None:
            size = (int(self.info["height"]), int(self.info["width"]))
        return to_uint8(fast_preview(x, self.latent_rgb, size=size))

    def frames(
        self,
        quantity: str = "x0_hat",
        mode: Literal["fast", "exact", "raw"] = "exact",
        indices: Sequence[int] | None = None,
        *,
        final: bool = True,
    ) -> list[np.ndarray]:
        """``uint8`` frames of one quantity over the steps, plus the final image when *final*."""
        idx = list(range(len(self))) if indices is None else list(indices)
        if mode == "exact" and idx:
            self.decode(idx, quantity)  # one batched pass
        out = [self.preview(i, quantity, mode) for i in idx]
        if final and self.image is not None:
            img = to_uint8(self.image)
            if out and out[0].shape != img.shape:
                img = np.asarray(_pil(img).resize((out[0].shape[1], out[0].shape[0])))
            out.append(img)
        return out

    def _pick(self, max_frames: int | None) -> list[int]:
        n = len(self)
        if not max_frames or n <= max_frames:
            return list(range(n))
        return sorted({int(round(i)) for i in np.linspace(0, n - 1, max_frames)})

    def save_strip(
        self,
        path: str | Path,
        quantity: str = "x0_hat",
        mode: Literal["fast", "exact", "raw"] = "exact",
        *,
        max_frames: int | None = 10,
        pad: int = 2,
    ) -> Path:
        """A PNG with frames side by side (at most *max_frames*, evenly spaced, then the final image)."""
        frames = self.frames(quantity, mode, self._pick(max_frames))
        if not frames:
            raise InputError("nothing to save yet; step the chain first")
        h = max(f.shape[0] for f in frames)
        w = sum(f.shape[1] for f in frames) + pad * (len(frames) - 1)
        strip = np.full((h, w, 3), 255, np.uint8)
        x = 0
        for f in frames:
            strip[: f.shape[0], x : x + f.shape[1]] = f
            x += f.shape[1] + pad
        return save_pil(_pil(strip), path)

    def save_gif(
        self,
        path: str | Path,
        quantity: str = "x0_hat",
        mode: Literal["fast", "exact", "raw"] = "exact",
        *,
        max_frames: int | None = None,
        duration_ms: int = 150,
        loop: int = 0,
    ) -> Path:
        """An animated GIF of the steps (Pillow), holding the final image three frames longer."""
        frames = self.frames(quantity, mode, self._pick(max_frames))
        if not frames:
            raise InputError("nothing to save yet; step the chain first")
        durations = [duration_ms] * len(frames)
        durations[-1] = duration_ms * 4
        imgs = [_pil(f) for f in frames]
        return save_pil(imgs[0], path, save_all=True, append_images=imgs[1:], duration=durations, loop=loop)

    def save_mp4(
        self,
        path: str | Path,
        quantity: str = "x0_hat",
        mode: Literal["fast", "exact", "raw"] = "exact",
        *,
        max_frames: int | None = None,
        fps: int = 8,
    ) -> Path:
        """An MP4 of the steps, through imageio's ffmpeg plugin (``pip install imageio-ffmpeg``)."""
        try:
            import imageio.v2 as imageio
            import imageio_ffmpeg  # noqa: F401
        except ImportError as e:
            raise MissingPackageError(
                "no MP4 writer is installed; fix: `pip install imageio-ffmpeg` (or diffkit[video]), or use save_gif"
            ) from e
        frames = self.frames(quantity, mode, self._pick(max_frames))
        if not frames:
            raise InputError("nothing to save yet; step the chain first")
        # H.264 wants even sizes
        frames = [f[: f.shape[0] // 2 * 2, : f.shape[1] // 2 * 2] for f in frames]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        imageio.mimwrite(path, frames, fps=fps, macro_block_size=1)
        return path

    # -- attention ------------------------------------------------------------------------
    def attention_map(
        self,
        token: int | str,
        *,
        indices: Sequence[int] | None = None,
        layers: Any = None,
        size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """The cross-attention map of one prompt token ``(H, W)``, averaged over steps and layers.

        *token* is a position or a word of the prompt (see :attr:`tokens`); *indices* pick
        steps (default all); *layers* a substring, list or predicate of layer names; *size*
        defaults to the image size.
        """
        from .attention import aggregate_attention

        pos = self.tokens.index(token)
        if pos >= self.tokens.n_tokens:
            raise InputError(
                f"position {pos} is padding; maps are kept for the prompt positions 0…{self.tokens.n_tokens - 1}"
            )
        recs = [self._records[i] for i in (range(len(self)) if indices is None else indices)]
        if size is None:
            size = (int(self.info["height"]), int(self.info["width"]))
        return aggregate_attention(recs, pos, layers=layers, size=size)

    def attention_overlay(
        self, token: int | str, *, index: int | None = None, alpha: float = 0.5, **kwargs: Any
    ) -> np.ndarray:
        """:meth:`attention_map` drawn over the final image (or over step *index*'s exact x̂_0)."""
        from .attention import overlay

        if index is None and self.image is not None:
            base = self.image
            heat = self.attention_map(token, **kwargs)
        else:
            i = len(self) - 1 if index is None else index
            base = self.decode([i])[0]
            heat = self.attention_map(token, indices=[i], **kwargs)
        return overlay(base, heat, alpha=alpha)


def _pil(a: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(a)
