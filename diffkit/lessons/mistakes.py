"""The usual mistakes of a hand-written DDIM loop (notebook 02, section 6): how each one changes the loop,
and the hint :func:`diffkit.lessons.check_sampler` gives when a student's result matches it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CHECKLIST", "SAMPLER_MISTAKES", "Loop"]


@dataclass(frozen=True)
class Loop:
    """One way of writing the DDIM loop: every field "right" is what ``pipe(...)`` does."""

    guidance: str = "right"  # "u+wc" | "c+w(c-u)" | "swapped" | "none" | "cfg_at_w<=1"
    timesteps: str = "right"  # "no_offset" | "linspace"
    prev: str = "right"  # "t-1": ᾱ one training step back instead of the next visited timestep
    final: str = "right"  # "other": 1.0 where the scheduler uses ᾱ_0, or the reverse
    batch: str = "right"  # "separate": two U-Net calls of batch 1 instead of one of batch 2
    alphas: str = "right"  # "float64"
    update: str = "right"  # "one_line": x_{t′} = √(ᾱ′/ᾱ)·x_t + (√(1−ᾱ′) − √(ᾱ′(1−ᾱ)/ᾱ))·ε̂
    decode: str = "right"  # "no_scale" | "times_scale"


SAMPLER_MISTAKES: dict[str, tuple[Loop, str]] = {
    "guidance u + w·c": (
        Loop(guidance="u+wc"),
        "guidance formula: it matches ε̂_u + w·ε̂_c; classifier-free guidance is ε̂ = ε̂_u + w·(ε̂_c − ε̂_u) "
        "(w = guidance_scale), the unconditional output moved w times the difference towards the conditional one",
    ),
    "guidance c + w·(c − u)": (
        Loop(guidance="c+w(c-u)"),
        "guidance formula: it matches ε̂_c + w·(ε̂_c − ε̂_u); the guided output starts from the unconditional "
        "one: ε̂ = ε̂_u + w·(ε̂_c − ε̂_u)",
    ),
    "halves swapped": (
        Loop(guidance="swapped"),
        "batch order: it matches the two halves swapped; encode_prompt returns (prompt, negative), and the "
        "pipeline's batch is [unconditional, conditional]: torch.cat([uncond, cond]), then .chunk(2) gives "
        "ε̂_u first",
    ),
    "no guidance": (
        Loop(guidance="none"),
        "guidance: it matches the conditional output alone; combine the halves with guidance_scale: "
        "ε̂ = ε̂_u + w·(ε̂_c − ε̂_u)",
    ),
    "guidance at w ≤ 1": (
        Loop(guidance="cfg_at_w<=1"),
        "guidance at guidance_scale ≤ 1: the pipeline then skips the unconditional half and calls the U-Net "
        "once, on x alone with the prompt's vectors, and uses that output as it is",
    ),
    "timesteps without steps_offset": (
        Loop(timesteps="no_offset"),
        "timesteps: it matches 0, T/steps, … without the config's steps_offset; use the scheduler's own "
        "list after set_timesteps(steps) (scheduler.timesteps)",
    ),
    "timesteps from linspace": (
        Loop(timesteps="linspace"),
        "timesteps: it matches evenly spaced timesteps from T − 1 down to 0; use the scheduler's own list "
        "after set_timesteps(steps) (scheduler.timesteps: 'leading' spacing plus steps_offset)",
    ),
    "ᾱ of t − 1": (
        Loop(prev="t-1"),
        "ᾱ_prev: it matches alphas_cumprod[t − 1], one training step back; a DDIM step jumps to the next "
        "visited timestep t′ = t − T // steps, so ᾱ_prev = alphas_cumprod[t′]",
    ),
    "ᾱ_prev at the last step": (
        Loop(final="other"),
        "the last step: there is no next timestep, and the scheduler then uses scheduler.final_alpha_cumprod "
        "(1.0 when the config's set_alpha_to_one is True, else ᾱ_0 = alphas_cumprod[0])",
    ),
    "two U-Net calls": (
        Loop(batch="separate"),
        "batching: it matches two U-Net calls of one sample each; the pipeline makes one call on the batch "
        "[x, x] with the text vectors [uncond, cond], and a different batch rounds differently in the last bits",
    ),
    "float64 ᾱ": (
        Loop(alphas="float64"),
        "precision: it matches ᾱ in float64; use the scheduler's float32 ᾱ (scheduler.alphas_cumprod)",
    ),
    "DDIM update in one line": (
        Loop(update="one_line"),
        "operation order: it matches the DDIM step written as one line, √(ᾱ′/ᾱ)·x_t + (…)·ε̂; the same "
        "mathematics rounds differently. Do as DDIMScheduler.step does: x̂_0 first, then "
        "x_{t′} = √ᾱ_{t′}·x̂_0 + √(1−ᾱ_{t′})·ε̂",
    ),
    "decoded without ÷ scaling_factor": (
        Loop(decode="no_scale"),
        "decoding: it matches decoding the latents as they are; the VAE takes latents / vae.config.scaling_factor",
    ),
    "decoded × scaling_factor": (
        Loop(decode="times_scale"),
        "decoding: it matches latents × scaling_factor; divide instead: vae.decode(latents / vae.config.scaling_factor)",
    ),
}
"""The usual mistakes of a hand-written DDIM loop: name → (how the loop differs, the hint to give)."""

CHECKLIST = (
    "check, in order: the initial latents (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) × "
    "init_noise_sigma, before any U-Net call), the text vectors (pipe.encode_prompt, batch [uncond, cond]), "
    "the timesteps (scheduler.timesteps), the guidance ε̂_u + w·(ε̂_c − ε̂_u), ᾱ_t and ᾱ_prev "
    "(final_alpha_cumprod after the last step), x̂_0 then x_{t′} in float32, and the decoding "
    "(latents / vae.config.scaling_factor, then (image / 2 + 0.5).clamp(0, 1))"
)
