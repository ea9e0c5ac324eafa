"""Quality of a pictogram-world pipeline, measured by the pixel oracle.

The figures of issue 3: colour and shape adherence on "a {color} {shape}"; gender and
occupation adherence on "a woman {occupation}" / "a man {occupation}"; the women-share of
neutral "a {occupation}" prompts beside the training share. Every function returns tidy
pandas tables (one row per image) or plain dicts of figures.
"""

from __future__ import annotations

import random
import time

from diffkit.tiny import oracle as _o
from diffkit.tiny import world as _w

__all__ = [
    "generate",
    "evaluate",
    "gender_prompts",
    "judge_agreement",
    "neutral_prompts",
    "neutral_share",
    "quick_check",
    "shape_prompts",
    "summarize",
]


def shape_prompts() -> list[tuple[str, _w.Attributes]]:
    """Every colour × shape as "a {color} {shape}"."""
    return [
        (f"{_w.article(c)} {s}", _w.Attributes("shape", color=c, shape=s))
        for c in _w.COLORS
        for s in _w.SHAPES
    ]


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
    guidance: float = 7.5,
    steps: int = 25,
    batch: int = 32,
):
    """Images for (prompt, seed) pairs, each seeded by its own ``torch.Generator``."""
    import torch

    images = []
    for i in range(0, len(prompts), batch):
        ps, ss = prompts[i : i + batch], seeds[i : i + batch]
        gens = [torch.Generator().manual_seed(int(s)) for s in ss]
        out = pipe(
            ps,
            num_inference_steps=steps,
            guidance_scale=guidance,
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
    guidance: float = 7.5,
    steps: int = 25,
    batch: int = 32,
):
    """One row per image: prompt, seed, guidance, the truth, the oracle reading and its verdict."""
    import pandas as pd

    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    pairs = [(p, a, s) for p, a in cases for s in seed_list]
    t0 = time.perf_counter()
    images = generate(
        pipe,
        [p for p, _, _ in pairs],
        [s for _, _, s in pairs],
        guidance=guidance,
        steps=steps,
        batch=batch,
    )
    seconds = (time.perf_counter() - t0) / max(len(pairs), 1)
    rows = []
    for (prompt, a, seed), im in zip(pairs, images):
        r = _o.read(im)
        row = {
            "prompt": prompt,
            "seed": seed,
            "guidance": guidance,
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


def judge_agreement(images, oracle_genders, judge) -> tuple[float, int]:
    """Share of images where a CLIP judge's woman/man call matches the oracle's reading.

    *judge* is ``(model, preprocess, tokenizer)`` as :func:`diffkit.tiny.load_clip` returns;
    images the oracle read as no person are left out. Returns ``(agreement, n compared)``.
    """
    import numpy as np

    from diffkit.tiny import clip as _c

    pairs = [(im, g) for im, g in zip(images, oracle_genders) if g in ("woman", "man")]
    if not pairs:
        return float("nan"), 0
    probs = _c.zero_shot(*judge, [im for im, _ in pairs], labels=("woman", "man"))
    pred = np.where(probs[:, 0] > probs[:, 1], "woman", "man")
    return float(np.mean(pred == np.array([g for _, g in pairs]))), len(pairs)


def quick_check(
    pipe, *, n: int = 48, seed: int = 0, guidance: float = 7.5, grid=None, batch: int = 16
) -> dict:
    """A small random slice of the bars, for training logs: half shapes, half stated gender.

    With *grid* (a path), the images are also saved there as one PNG, 8 per row, in the
    order of the cases (shapes first), so a training run can be looked at.
    """
    rng = random.Random(seed)
    cases = rng.choices(shape_prompts(), k=n // 2) + rng.choices(gender_prompts(), k=n - n // 2)
    df = evaluate(pipe, cases, seeds=[rng.randrange(10**6)], guidance=guidance, batch=batch)
    if grid is not None:
        from diffkit.tiny.train import _save_grid

        _save_grid(df.attrs["images"], 8, grid)
    return summarize(df)
