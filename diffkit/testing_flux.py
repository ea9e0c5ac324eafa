"""A tiny random Flux pipeline, built offline: its T5 tokenizer is written here from a caption corpus.

Flux reads the prompt twice: CLIP (pooled, into the time embedding) and T5 (every token, into
the attention). No T5 vocabulary ships with diffkit, so :func:`t5_tokenizer` writes a
SentencePiece-style Unigram model (HF ``tokenizers``) from 200 captions made of the audit's own
occupations and a few scenes, and wraps it as a ``T5TokenizerFast``. The transformer
is Flux's own architecture at toy size: 1 double-stream and 1 single-stream block, patch size 1,
4 input channels (one latent channel packed 2×2), 2 heads of 16, joint dimension 32. Every module
is put in ``eval()`` mode: a model built from its config is in training mode, and T5's dropout
(0.1) then made two identical ``pipe()`` calls differ by 5e-4.

``kind="flux"`` has guidance embeddings and FLUX.1-dev's scheduler (dynamic shifting, μ from the
image's token count); ``kind="flux-schnell"`` has neither, as FLUX.1-schnell.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["CAPTIONS", "flux_pipeline", "t5_tokenizer"]

_PEOPLE = (
    "CEO",
    "software developer",
    "nurse",
    "lawyer",
    "pilot",
    "flight attendant",
    "taxi driver",
    "firefighter",
    "electrician",
    "chef",
    "housekeeper",
    "teacher",
    "police officer",
    "pharmacist",
    "person",
    "woman",
    "man",
    "doctor",
    "cat",
    "dog",
)
_SCENES = (
    "a photo of a {}",
    "a photo of the face of a {}",
    "a {} at work",
    "a woman {}",
    "a man {}",
    "a female {}",
    "a male {}",
    "a red circle and a {}",
    "a blue square beside a {}",
    "a painting of a {} on a table",
)
CAPTIONS: tuple[str, ...] = tuple(t.format(p) for t in _SCENES for p in _PEOPLE)
"""The corpus the tiny T5 tokenizer is trained on (200 captions)."""

#: FLUX.1-dev's scheduler config (``scheduler/scheduler_config.json`` of black-forest-labs/FLUX.1-dev)
DEV_SCHEDULER = dict(
    shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096
)
#: FLUX.1-schnell's: no shifting
SCHNELL_SCHEDULER = dict(shift=1.0, use_dynamic_shifting=False)


def t5_tokenizer(max_length: int = 512) -> Any:
    """A ``T5TokenizerFast`` with a SentencePiece-style Unigram model written from :data:`CAPTIONS`.

    The pieces are every word of the corpus (``"▁woman"``, scored by its log frequency) and every
    ASCII letter, digit and punctuation mark (scored far lower, so unseen words still split into pieces); a Viterbi pass picks
    whole words where it can, as SentencePiece does. Offline and deterministic. (Training the
    same model with ``tokenizers``' ``UnigramTrainer`` on so small a corpus kept only 89 pieces,
    mostly letters: "woman" came out as "▁wo", "ma", "n".)
    """
    import math
    import string
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import T5TokenizerFast

    words = Counter(f"▁{w}" for caption in CAPTIONS for w in caption.split())
    total = sum(words.values())
    chars = sorted({c for w in words for c in w} | set(string.ascii_letters + string.digits + string.punctuation))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(w, math.log(n / total)) for w, n in sorted(words.items())]
    vocab += [(c, -20.0) for c in chars if c not in words]
    inner = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    inner.normalizer = normalizers.NFKC()
    inner.pre_tokenizer = pre_tokenizers.Metaspace()
    inner.decoder = decoders.Metaspace()
    return T5TokenizerFast(
        tokenizer_object=inner,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_ids=0,
        model_max_length=max_length,
    )


def flux_pipeline(seed: int, clip_tokenizer: Any, clip_encoder: Any, *, schnell: bool = False) -> Any:
    """The tiny ``FluxPipeline`` (see the module doc); *clip_encoder* is a seeded 5-layer width-32 CLIP."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import T5Config, T5EncoderModel

    tokenizer_2 = t5_tokenizer()
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
        guidance_embeds=not schnell,
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
        latent_channels=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    torch.manual_seed(seed + 3)
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    for module in (transformer, vae, clip_encoder, text_encoder_2):
        module.eval()  # T5's dropout would otherwise make two identical calls differ
    scheduler = FlowMatchEulerDiscreteScheduler(**(SCHNELL_SCHEDULER if schnell else DEV_SCHEDULER))
    return FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=clip_encoder,
        tokenizer=clip_tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
