"""The architecture of diffkit-tiny: small, standard diffusers and transformers modules.

Every part is a stock class configured small, so the saved folder is an ordinary
``StableDiffusionPipeline`` folder:

* ``CLIPTokenizer`` with CLIP's own 49,408-token BPE vocabulary, 32 tokens long;
* ``CLIPTextModel``: 3 layers, width 64 (the token embedding, 49,408 × 64, is most of it);
* ``AutoencoderKL``: 64×64×3 images ↔ 16×16×4 latents (factor 4), channels 16/32/64, no attention;
* ``UNet2DConditionModel`` at 16×16 → 8×8 → 4×4, channels 32/64/128; cross-attention
  (no self-attention) only at 8×8 and 4×4; the attention-pooled text is also added to the
  time embedding (``addition_embed_type="text"``) and every ResNet block scales and shifts
  its features with it (``resnet_time_scale_shift="scale_shift"``, FiLM): a global route
  that carries colour, gender and occupation everywhere;
* a cosine noise schedule (``squaredcos_cap_v2``, terminal SNR ≈ 2e-9, so no colour leaks
  through the noise of the last step), v-prediction, DDIM with trailing timesteps.

That is diffkit-tiny 1 (``arch="tiny1"``, still the default of every builder here, so old
recipes and tests rebuild it unchanged), shipped until issue 11. **diffkit-tiny 2**
(``arch="tiny2"``), the shipped model since, is Stable Diffusion 1.x's design at a quarter of
the side:

* 128×128 RGB images; ``AutoencoderKL`` with downsampling factor 8 (four blocks, channels
  16/32/64/64, 4 latent channels) to 16×16×4 latents, as SD has 64×64×4 at 512²; its
  ``scaling_factor`` is 1 / std of the latents, computed when the latent cache is built
  (:func:`scaling_factor`), the way SD's 0.18215 was;
* ``CLIPTokenizer`` and ``CLIPTextModel`` with 77 positions, CLIP's vocabulary;
* ``UNet2DConditionModel`` 16×16 → 8×8 → 4×4, channels 32/64/128, whose text enters **only**
  through cross-attention (``Transformer2DModel`` blocks with self- then cross-attention, as
  in SD) at 16×16, 8×8 and the 4×4 middle block; no ``addition_embed_type``, so no pooled
  text. The timestep scales and shifts the ResNet features (``resnet_time_scale_shift=
  "scale_shift"``); the text never does;
* SD 1.5's scheduler config exactly (:data:`SD15_SCHEDULER_CONFIG`: ``scaled_linear`` β from
  0.00085 to 0.012, 1,000 steps, ε-prediction, ``steps_offset=1``), PNDM as the folder's
  default scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InputError

__all__ = [
    "ARCHS",
    "MAX_TOKENS",
    "SCHEDULER_CONFIG",
    "SD15_SCHEDULER_CONFIG",
    "TEXT_CONFIG",
    "TINY2",
    "UNET_CONFIG",
    "VAE_CONFIG",
    "Arch",
    "arch",
    "scaling_factor",
    "build_scheduler",
    "build_text_encoder",
    "build_tokenizer",
    "build_train_scheduler",
    "build_unet",
    "build_vae",
]

MAX_TOKENS = 32

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
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(16, 32, 64),
    layers_per_block=1,
    latent_channels=4,
    # 4 channels per group: with one channel per group GroupNorm becomes instance norm and
    # erases the flat colour of the image (a first run reached 40 % oracle agreement).
    norm_num_groups=4,
    sample_size=64,
    mid_block_add_attention=False,
)

UNET_CONFIG: dict[str, Any] = dict(
    sample_size=16,  # latents; with the VAE factor 4 the pipeline's default size is 64
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(32, 64, 128),
    layers_per_block=1,
    cross_attention_dim=64,
    attention_head_dim=4,  # diffusers' legacy name: the number of heads
    only_cross_attention=True,  # no self-attention: cheaper; the convolutions see the layout
    resnet_time_scale_shift="scale_shift",  # FiLM: time + pooled text scale and shift features
    norm_num_groups=8,  # at least 4 channels per group, so GroupNorm keeps colour
    addition_embed_type="text",
    addition_embed_type_num_heads=4,
)

SCHEDULER_CONFIG: dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    prediction_type="v_prediction",
    clip_sample=False,
    steps_offset=1,
)


# ----------------------------------------------------------------------------- diffkit-tiny 2

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
SD_MAX_TOKENS = 77  # CLIP ViT-L/14's context length, SD 1.x's tokenizer.model_max_length

TEXT_CONFIG_TINY2: dict[str, Any] = {**TEXT_CONFIG, "max_position_embeddings": SD_MAX_TOKENS}

VAE_CONFIG_TINY2: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,  # three downsamplings: factor 8, as SD's VAE
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(16, 32, 64, 64),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=4,  # 4+ channels per group keep the flat colours (see VAE_CONFIG)
    sample_size=128,
    mid_block_add_attention=False,  # SD's VAE has one; at 16×16 flat pictograms it buys nothing
)

UNET_CONFIG_TINY2: dict[str, Any] = dict(
    sample_size=16,  # latents; with the VAE factor 8 the pipeline's default size is 128
    in_channels=4,
    out_channels=4,
    # SD 1.x's layout: cross-attention at every level but the lowest, and in the middle block
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(32, 64, 128),
    layers_per_block=1,
    cross_attention_dim=TEXT_CONFIG_TINY2["hidden_size"],
    attention_head_dim=4,  # diffusers' legacy name: the number of heads
    norm_num_groups=8,  # at least 4 channels per group, so GroupNorm keeps colour
    # the timestep (never the text) scales and shifts each ResNet's features
    resnet_time_scale_shift="scale_shift",
)


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


@dataclass(frozen=True)
class Arch:
    """One diffkit-tiny architecture: its image size and the configs of its parts."""

    name: str
    image_size: int
    max_tokens: int
    text_config: dict
    vae_config: dict
    unet_config: dict
    train_scheduler_config: dict
    prediction_type: str

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae_config["block_out_channels"]) - 1)

    def build_scheduler(self):
        """The scheduler saved in the pipeline folder (its default sampler)."""
        if self.name == "tiny1":
            from diffusers import DDIMScheduler

            return DDIMScheduler(
                **SCHEDULER_CONFIG, timestep_spacing="trailing", set_alpha_to_one=True
            )
        import inspect

        from diffusers import PNDMScheduler

        known = inspect.signature(PNDMScheduler.__init__).parameters
        sched = PNDMScheduler(**{k: v for k, v in SD15_SCHEDULER_CONFIG.items() if k in known})
        # SD 1.5's file also carries clip_sample=False, which PNDM ignores but a DDIM built
        # from this config reads (its own default, True, would clip x̂₀ in latent space)
        sched.register_to_config(
            **{k: v for k, v in SD15_SCHEDULER_CONFIG.items() if k not in known}
        )
        return sched


TINY1 = Arch(
    "tiny1",
    image_size=64,
    max_tokens=MAX_TOKENS,
    text_config=TEXT_CONFIG,
    vae_config=VAE_CONFIG,
    unet_config=UNET_CONFIG,
    train_scheduler_config=SCHEDULER_CONFIG,
    prediction_type="v_prediction",
)
TINY2 = Arch(
    "tiny2",
    image_size=128,
    max_tokens=SD_MAX_TOKENS,
    text_config=TEXT_CONFIG_TINY2,
    vae_config=VAE_CONFIG_TINY2,
    unet_config=UNET_CONFIG_TINY2,
    # DDPM's forward process on SD 1.5's β schedule, ε-prediction
    train_scheduler_config={
        k: SD15_SCHEDULER_CONFIG[k]
        for k in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "steps_offset")
    }
    | {"prediction_type": "epsilon", "clip_sample": False},
    prediction_type="epsilon",
)
ARCHS: dict[str, Arch] = {"tiny1": TINY1, "tiny2": TINY2}


def arch(name: str | Arch) -> Arch:
    """The :class:`Arch` called *name* (``"tiny1"`` or ``"tiny2"``)."""
    if isinstance(name, Arch):
        return name
    if name not in ARCHS:
        raise InputError(
            f"unknown diffkit-tiny architecture {name!r}; choose one of {tuple(ARCHS)}"
        )
    return ARCHS[name]


def build_tokenizer(folder=None, *, arch_name: str = "tiny1"):
    """CLIP's BPE tokenizer, padded to the architecture's token count (32 or 77)."""
    from diffkit._clip_vocab import clip_tokenizer

    return clip_tokenizer(folder, model_max_length=arch(arch_name).max_tokens)


def build_text_encoder(seed: int = 0, *, arch_name: str = "tiny1"):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(**arch(arch_name).text_config))


def build_vae(seed: int = 0, *, arch_name: str = "tiny1"):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**arch(arch_name).vae_config)


def build_unet(seed: int = 0, *, arch_name: str = "tiny1", **overrides):
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**{**arch(arch_name).unet_config, **overrides})


def build_train_scheduler(*, arch_name: str = "tiny1"):
    """The forward (noising) process used in training."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**arch(arch_name).train_scheduler_config)


def build_scheduler(*, arch_name: str = "tiny1"):
    """The sampler shipped in the pipeline: tiny 1, DDIM with trailing timesteps (starts at
    t = 999); tiny 2, SD 1.5's PNDM."""
    return arch(arch_name).build_scheduler()
