"""Quality of a pictogram-world pipeline, measured by the pixel oracle.

The figures of issue 3: colour and shape adherence on "a {color} {shape}"; gender and
occupation adherence on "a woman {occupation}" / "a man {occupation}"; the women-share of
neutral "a {occupation}" prompts beside the training share. Every function returns tidy
pandas tables (one row per image) or plain dicts of figures.
"""

from __future__ import annotations

import random
import time

from diffkit.reverse.text import word_positions
from diffkit.tiny import oracle as _o
from diffkit.tiny import world as _w

__all__ = [
    "attention_localisation",
    "generate",
    "evaluate",
    "gender_prompts",
    "judge_agreement",
    "judge_labels",
    "neutral_prompts",
    "neutral_share",
    "quick_check",
    "shape_prompts",
    "summarize",
]


def shape_prompts() -> list[tuple[str, _w.Attributes]]:
    """Every colour × shape as "a {color} {shape}"."""
    return [(f"{_w.article(c)} {s}", _w.Attributes("shape", color=c, shape=s)) for c in _w.COLORS for s in _w.SHAPES]


def gender_prompts() -> list[tuple[str, _w.Attributes]]:
    """ "a woman {occupation}" and "a man {occupation}" for every occupation."""
    return [
        (f"a {g} {o}", _w.Attributes("person", occupation=o, gender=g))
        for o in _w.OCCUPATIONS
        for g in ("woman", "man")
    ]


def neutral_prompts() -> list[tuple[str, _w.Attributes]]:
    """ "a {occupation}" (with the right article) for every occupation; gender unknown."""
    return [(_w.article(o), _w.Attributes("person", occupation=o)) for o in _w.OCCUPATIONS]


def generate(
    pipe,
    prompts: list[str],
    seeds: list[int],
    *,
    guidance_scale: float = 7.5,
    steps: int = 25,
    batch_size: int = 32,
):
    """Images for (prompt, seed) pairs, each seeded by its own ``torch.Generator``."""
    import torch

    images = []
    for i in range(0, len(prompts), batch_size):
        ps, ss = prompts[i : i + batch_size], seeds[i : i + batch_size]
        gens = [torch.Generator().manual_seed(int(s)) for s in ss]
        out = pipe(
            ps,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=gens,
            output_type="pil",
        )
        images += out.images
    return images


def evaluate(
    pipe,
    cases,
    *,
    seeds: int | list[int] = 8,
    guidance_scale: float = 7.5,
    steps: int = 25,
    batch_size: int = 32,
):
    """One row per image: prompt, seed, guidance_scale, the truth, the oracle reading and its verdict."""
    import pandas as pd

    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    pairs = [(p, a, s) for p, a in cases for s in seed_list]
    t0 = time.perf_counter()
    images = generate(
        pipe,
        [p for p, _, _ in pairs],
        [s for _, _, s in pairs],
        guidance_scale=guidance_scale,
        steps=steps,
        batch_size=batch_size,
    )
    seconds = (time.perf_counter() - t0) / max(len(pairs), 1)
    rows = []
    for (prompt, a, seed), im in zip(pairs, images):
        r = _o.read(im)
        row = {
            "prompt": prompt,
            "seed": seed,
            "guidance_scale": guidance_scale,
            "steps": steps,
            "kind": a.kind,
            "color": a.color,
            "shape": a.shape,
            "occupation": a.occupation,
            "gender": a.gender,
            "read_kind": r.kind,
            "read_color": r.color,
            "read_shape": r.shape,
            "read_occupation": r.occupation,
            "read_gender": r.gender,
            "sec_per_image": seconds,
        }
        if a.kind == "shape":
            row["color_ok"] = r.color == a.color
            row["shape_ok"] = r.shape == a.shape
        else:
            row["occupation_ok"] = r.occupation == a.occupation
            if a.gender is not None:
                row["gender_ok"] = r.gender == a.gender
        rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs["images"] = images
    return df


def summarize(df) -> dict:
    """Adherence rates of an :func:`evaluate` table."""
    out = {"n": len(df)}
    for col in ("color_ok", "shape_ok", "gender_ok", "occupation_ok"):
        if col in df and df[col].notna().any():
            out[col.replace("_ok", "")] = round(float(df[col].dropna().astype(float).mean()), 4)
    return out


def neutral_share(df, *, women_share=None):
    """Per occupation: generated women-share (oracle) beside the training share."""
    import pandas as pd

    women_share = women_share or _w.BLS_CPS_2021_WOMEN_SHARE
    rows = []
    for occ, g in df.groupby("occupation", sort=False):
        person = g[g.read_gender.isin(["woman", "man"])]
        rows.append(
            {
                "occupation": occ,
                "n": len(g),
                "no_person": int((~g.read_gender.isin(["woman", "man"])).sum()),
                "generated_women_share": round(float((person.read_gender == "woman").mean()), 4)
                if len(person)
                else float("nan"),
                "training_women_share": women_share[occ],
                "occupation_ok": round(float(g.occupation_ok.mean()), 4),
            }
        )
    return pd.DataFrame(rows)


def judge_labels(images, oracle_genders, judge) -> tuple[list[str], list[str]]:
    """``(oracle, judge)``: the woman/man readings of the images the oracle read as a person,
    and a CLIP judge's call on the same images.

    *judge* is ``(model, preprocess, tokenizer)`` as :func:`diffkit.tiny.load_clip` returns.
    """
    from diffkit.tiny import clip as _c

    pairs = [(im, g) for im, g in zip(images, oracle_genders) if g in ("woman", "man")]
    if not pairs:
        return [], []
    probs = _c.zero_shot(*judge, [im for im, _ in pairs], labels=("woman", "man"))
    return [g for _, g in pairs], ["woman" if p[0] > p[1] else "man" for p in probs]


def judge_agreement(images, oracle_genders, judge) -> tuple[float, int]:
    """Share of images where a CLIP judge's woman/man call matches the oracle's reading
    (:func:`judge_labels`); images the oracle read as no person are left out. Returns
    ``(agreement, n compared)``.
    """
    import numpy as np

    oracle, called = judge_labels(images, oracle_genders, judge)
    if not oracle:
        return float("nan"), 0
    return float(np.mean(np.array(oracle) == np.array(called))), len(oracle)


def quick_check(
    pipe, *, n: int = 48, seed: int = 0, guidance_scale: float = 7.5, grid=None, batch_size: int = 16
) -> dict:
    """A small random slice of the bars, for training logs: half shapes, half stated gender.

    With *grid* (a path), the images are also saved there as one PNG, 8 per row, in the
    order of the cases (shapes first), so a training run can be looked at.
    """
    rng = random.Random(seed)
    cases = rng.choices(shape_prompts(), k=n // 2) + rng.choices(gender_prompts(), k=n - n // 2)
    df = evaluate(pipe, cases, seeds=[rng.randrange(10**6)], guidance_scale=guidance_scale, batch_size=batch_size)
    if grid is not None:
        from diffkit.tiny.data import save_grid

        save_grid(df.attrs["images"], 8, grid)
    return summarize(df)


# ----------------------------------------------------------------------------- attention


def object_mask(image, *, threshold: float = 90.0):
    """Boolean (H, W): the pixels of a shape image that are not white background.

    The same rule as the oracle's shape mask (RGB distance from white above *threshold*),
    read on the image itself, so it works on generated images.
    """
    import numpy as np

    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    return np.linalg.norm(arr - 255.0, axis=2) > threshold


def attention_localisation(
    pipe,
    cases=None,
    *,
    seeds: int | list[int] = 4,
    steps: int = 25,
    guidance_scale: float = 7.5,
    window: tuple[float, float] = (1 / 3, 2 / 3),
):
    """Do the colour and shape words' cross-attention maps land on the object? (issue 11)

    For each "a {color} {shape}" prompt and seed, the image is generated with every
    cross-attention layer's maps captured (:func:`diffkit.reverse.capture_cross_attention`,
    the conditional half of the guidance batch); the maps of the colour word and of the
    shape word are averaged over the steps in *window* (the middle third by default) and
    over all cross-attention layers, upsampled to the image, and compared inside and outside
    the generated object's mask (:func:`object_mask`).

    Returns a table, one row per image and word: the mean attention per pixel ``inside`` and
    ``outside`` the mask and their ``ratio``. Issue 11's bar: the words' ratio at least 2.
    Images with an empty mask or no background are left out (``mask_pixels`` 0).
    """
    import pandas as pd
    import torch

    from diffkit.reverse.attention import (
        CrossAttentionStore,
        aggregate_attention,
        capture_cross_attention,
    )

    cases = shape_prompts() if cases is None else cases
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    tok = pipe.tokenizer
    size = pipe.unet.config.sample_size
    rows = []
    for prompt, a in cases:
        words = {"color": a.color, "shape": a.shape}
        pos = {k: word_positions(tok, prompt, w) for k, w in words.items()}
        n_tokens = len(tok(prompt).input_ids)
        for seed in seed_list:
            store = CrossAttentionStore(
                n_tokens, (size, size), cond_slice=slice(1, 2) if guidance_scale > 1 else slice(None)
            )
            per_step = []

            def keep(pipe_, i, t, kw, _store=store, _out=per_step):
                _out.append(_store.pop())
                return kw

            with capture_cross_attention(pipe.unet, store):
                image = pipe(
                    prompt,
                    num_inference_steps=steps,
                    guidance_scale=guidance_scale,
                    generator=torch.Generator().manual_seed(int(seed)),
                    callback_on_step_end=keep,
                ).images[0]
            lo, hi = int(len(per_step) * window[0]), max(int(len(per_step) * window[1]), 1)
            mid = per_step[lo:hi] or per_step
            mask = torch.from_numpy(object_mask(image))
            for k, p in pos.items():
                m = aggregate_attention(mid, token=p, size=tuple(mask.shape)).float().cpu()
                m = m.sum(0) if m.ndim == 3 else m  # a word of several tokens: their sum
                ok = 0 < int(mask.sum()) < mask.numel()
                inside = float(m[mask].mean()) if ok else float("nan")
                outside = float(m[~mask].mean()) if ok else float("nan")
                rows.append(
                    {
                        "prompt": prompt,
                        "seed": seed,
                        "word": k,
                        "token": words[k],
                        "mask_pixels": int(mask.sum()) if ok else 0,
                        "inside": inside,
                        "outside": outside,
                        "ratio": inside / outside if ok and outside > 0 else float("nan"),
                    }
                )
    return pd.DataFrame(rows)
