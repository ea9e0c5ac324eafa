"""Tiny random Stable Diffusion pipelines built from configs, for tests and benchmarks.

The same recipe diffusers' own tests use (``block_out_channels=(32, 64)``, a 5-layer
32-wide text encoder), except that the tokenizer carries CLIP's real BPE vocabulary, built
offline (:mod:`diffkit._clip_vocab`). They run on a CPU in milliseconds and save with
``save_pretrained`` so that :func:`diffkit.load_pipeline` loads them back through the same
path a hub id takes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

import torch

from ._clip_vocab import CLIP_VOCAB_SIZE, write_clip_tokenizer_files
from .errors import InputError

__all__ = ["KINDS", "save_tiny_random_pipeline", "tiny_random_pipeline"]

KINDS = ("sd", "sdxl", "sd3", "flux", "flux-schnell")
"""The kinds :func:`tiny_random_pipeline` builds."""


def _text_config(**extra: Any) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=CLIP_VOCAB_SIZE,
        max_position_embeddings=77,
        **extra,
    )


def _vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        sample_size=64,
    )


_UNET_COMMON = dict(
    block_out_channels=(32, 64),
    layers_per_block=2,
    sample_size=32,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
)


def tiny_random_pipeline(
    kind: Literal["sd", "sdxl", "sd3", "flux", "flux-schnell"] = "sd",
    *,
    seed: int = 0,
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon",
    tokenizer_dir: str | Path | None = None,
) -> Any:
    """A random ``StableDiffusionPipeline`` (``"sd"``), ``StableDiffusionXLPipeline`` (``"sdxl"``)
    ``StableDiffusion3Pipeline`` (``"sd3"``) or ``FluxPipeline`` (``"flux"``, with guidance
    embeddings as FLUX.1-dev; ``"flux-schnell"`` without, as FLUX.1-schnell; see
    :mod:`diffkit.testing_flux`).

    The VAE downsamples by 2 (so a 64×64 image has 32×32 latents); weights are seeded. The SD 3
    pipeline follows diffusers' fast tests: a one-layer MMDiT (patch size 1), two CLIP text
    encoders with projection, no T5 (diffusers then feeds zeros in its place), a flow-matching
    Euler scheduler, and a VAE with SD 3's ``shift_factor``. *prediction_type* applies to SD and SDXL.
    The caller's global random stream (``torch.manual_seed``) is left as it was.
    """
    if kind not in KINDS:
        raise InputError(f"kind must be one of {list(KINDS)}, got {kind!r}; fix: pass e.g. 'sd' or 'flux'")
    with torch.random.fork_rng(devices=[]):
        return _build(kind, seed=seed, prediction_type=prediction_type, tokenizer_dir=tokenizer_dir)


def _build(kind: str, *, seed: int, prediction_type: str, tokenizer_dir: str | Path | None) -> Any:
    from transformers import CLIPTokenizer

    tok_dir = Path(tokenizer_dir or tempfile.mkdtemp(prefix="diffkit-tok-"))
    write_clip_tokenizer_files(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    if kind.startswith("flux"):
        return _flux(seed, kind == "flux-schnell", tokenizer)
    build = {"sd": _sd, "sdxl": _sdxl, "sd3": _sd3}[kind]
    return build(seed, prediction_type, tokenizer)


def _sd(seed: int, prediction_type: str, tokenizer: Any) -> Any:
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**_UNET_COMMON, cross_attention_dim=32, norm_num_groups=32)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )
    torch.manual_seed(seed + 1)
    vae = _vae()
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(_text_config())
    return StableDiffusionPipeline(
        unet=unet,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _sdxl(seed: int, prediction_type: str, tokenizer: Any) -> Any:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        **_UNET_COMMON,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 * 8 + 32
        cross_attention_dim=64,
        norm_num_groups=1,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type=prediction_type,
    )
    torch.manual_seed(seed + 1)
    vae = _vae()
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(_text_config(hidden_act="gelu", projection_dim=32))
    torch.manual_seed(seed + 3)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(hidden_act="gelu", projection_dim=32))
    return StableDiffusionXLPipeline(
        unet=unet,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer,
    )


def _sd3(seed: int, prediction_type: str, tokenizer: Any) -> Any:
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=1,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=64,
        pooled_projection_dim=64,
        out_channels=4,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        layers_per_block=1,
        latent_channels=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModelWithProjection(_text_config(hidden_act="gelu", projection_dim=32))
    torch.manual_seed(seed + 3)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(hidden_act="gelu", projection_dim=32))
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    )


def _flux(seed: int, schnell: bool, tokenizer: Any) -> Any:
    from transformers import CLIPTextModel

    from .testing_flux import flux_pipeline

    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(_text_config(hidden_act="gelu", projection_dim=32))
    return flux_pipeline(seed, tokenizer, text_encoder, schnell=schnell)


def save_tiny_random_pipeline(folder: str | Path, kind: str = "sd", **kwargs: Any) -> Path:
    """Build :func:`tiny_random_pipeline` and ``save_pretrained`` it (safetensors) into *folder*."""
    folder = Path(folder)
    pipe = tiny_random_pipeline(kind, **kwargs)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder
