"""The architecture of diffkit-tiny 2: small, standard diffusers and transformers modules.

Every part is a stock class configured small, so the saved folder is an ordinary
``StableDiffusionPipeline`` folder. diffkit-tiny 2, the shipped model since issue 11, is Stable
Diffusion 1.x's design at a quarter of the side:

* 128×128 RGB images; ``AutoencoderKL`` with downsampling factor 8 (four blocks, channels
  16/32/64/64, 4 latent channels) to 16×16×4 latents, as SD has 64×64×4 at 512²; its
  ``scaling_factor`` is 1 / std of the latents, computed when the latent cache is built
  (:func:`scaling_factor`), the way SD's 0.18215 was;
* ``CLIPTokenizer`` and ``CLIPTextModel`` (3 layers, width 64) with 77 positions, CLIP's
  49,408-token vocabulary;
* ``UNet2DConditionModel`` 16×16 → 8×8 → 4×4, channels 32/64/128, whose text enters **only**
  through cross-attention (``Transformer2DModel`` blocks with self- then cross-attention, as
  in SD) at 16×16, 8×8 and the 4×4 middle block; no ``addition_embed_type``, so no pooled
  text. The timestep scales and shifts the ResNet features (``resnet_time_scale_shift=
  "scale_shift"``); the text never does;
* SD 1.5's scheduler config exactly (:data:`SD15_SCHEDULER_CONFIG`: ``scaled_linear`` β from
  0.00085 to 0.012, 1,000 steps, ε-prediction, ``steps_offset=1``), PNDM as the folder's
  default scheduler.

diffkit-tiny 1 (64², v-prediction, pooled-text FiLM) left the tree in issue 24; the model card
names the commit that still builds it.
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError

__all__ = [
    "IMAGE_SIZE",
    "MAX_TOKENS",
    "SD15_SCHEDULER_CONFIG",
    "TEXT_CONFIG",
    "TRAIN_SCHEDULER_CONFIG",
    "UNET_CONFIG",
    "VAE_CONFIG",
    "VAE_FACTOR",
    "build_scheduler",
    "build_text_encoder",
    "build_tokenizer",
    "build_train_scheduler",
    "build_unet",
    "build_vae",
    "scaling_factor",
]

#: ``runwayml/stable-diffusion-v1-5``'s ``scheduler/scheduler_config.json`` (diffusers 0.6.0),
#: key for key: the folder's default scheduler of diffkit-tiny 2.
SD15_SCHEDULER_CONFIG: dict[str, Any] = dict(
    beta_end=0.012,
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    clip_sample=False,
    num_train_timesteps=1000,
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
    trained_betas=None,
)
MAX_TOKENS = 77  # CLIP ViT-L/14's context length, SD 1.x's tokenizer.model_max_length

TEXT_CONFIG: dict[str, Any] = dict(
    vocab_size=49408,
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=MAX_TOKENS,
    projection_dim=64,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
)

VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,  # three downsamplings: factor 8, as SD's VAE
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(16, 32, 64, 64),
    layers_per_block=1,
    latent_channels=4,
    # 4 channels per group: with one channel per group GroupNorm becomes instance norm and
    # erases the flat colour of the image (a first run reached 40 % oracle agreement).
    norm_num_groups=4,
    sample_size=128,
    mid_block_add_attention=False,  # SD's VAE has one; at 16×16 flat pictograms it buys nothing
)

UNET_CONFIG: dict[str, Any] = dict(
    sample_size=16,  # latents; with the VAE factor 8 the pipeline's default size is 128
    in_channels=4,
    out_channels=4,
    # SD 1.x's layout: cross-attention at every level but the lowest, and in the middle block
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(32, 64, 128),
    layers_per_block=1,
    cross_attention_dim=TEXT_CONFIG["hidden_size"],
    attention_head_dim=4,  # diffusers' legacy name: the number of heads
    norm_num_groups=8,  # at least 4 channels per group, so GroupNorm keeps colour
    # the timestep (never the text) scales and shifts each ResNet's features
    resnet_time_scale_shift="scale_shift",
)


IMAGE_SIZE = VAE_CONFIG["sample_size"]
VAE_FACTOR = 2 ** (len(VAE_CONFIG["block_out_channels"]) - 1)  # 8, as SD's
#: DDPM's forward process on SD 1.5's β schedule, ε-prediction: the training noise.
TRAIN_SCHEDULER_CONFIG: dict[str, Any] = {
    k: SD15_SCHEDULER_CONFIG[k]
    for k in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "steps_offset")
} | {"prediction_type": "epsilon", "clip_sample": False}


def scaling_factor(latents) -> float:
    """The VAE ``scaling_factor`` that gives *latents* unit variance: 1 / their std.

    This is how SD's 0.18215 was set (1 / the std of the first batch's latents); here it
    is computed over the whole latent cache and stored in the VAE's config.
    """
    import torch

    std = float(torch.as_tensor(latents).float().std())
    if not std > 0:
        raise InputError(f"latents have std {std}; the VAE encodes every image alike, retrain it")
    return 1.0 / std


def build_tokenizer(folder=None):
    """CLIP's BPE tokenizer, padded to 77 tokens."""
    from diffkit._clip_vocab import clip_tokenizer

    return clip_tokenizer(folder, model_max_length=MAX_TOKENS)


def build_text_encoder(seed: int = 0):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))


def build_vae(seed: int = 0):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**VAE_CONFIG)


def build_unet(seed: int = 0, **overrides):
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**{**UNET_CONFIG, **overrides})


def build_train_scheduler():
    """The forward (noising) process used in training."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**TRAIN_SCHEDULER_CONFIG)


def build_scheduler():
    """The sampler shipped in the pipeline: SD 1.5's PNDM, key for key."""
    import inspect

    from diffusers import PNDMScheduler

    known = inspect.signature(PNDMScheduler.__init__).parameters
    sched = PNDMScheduler(**{k: v for k, v in SD15_SCHEDULER_CONFIG.items() if k in known})
    # SD 1.5's file also carries clip_sample=False, which PNDM ignores but a DDIM built
    # from this config reads (its own default, True, would clip x̂₀ in latent space)
    sched.register_to_config(**{k: v for k, v in SD15_SCHEDULER_CONFIG.items() if k not in known})
    return sched
