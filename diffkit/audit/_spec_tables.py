"""The CSV tables a spec names, read into it: the reference shares (``prompts.reference``), the
per-prompt seeds (``audit.seeds``) and a published audit's counts (``[replication] published``)."""

from __future__ import annotations

from pathlib import Path

from ..checks import MAX_SEED
from ..i18n import gettext as _
from ._spec_reader import SpecReader, find_csv, load_csv
from ._spec_schema import ReplicationSpec

__all__ = ["read_prompt_seeds", "read_reference", "read_replication"]


def read_reference(r: SpecReader, ref: str, base_dir: Path | None) -> tuple[dict, dict, str]:
    """``prompts.reference``: ``(women_share by occupation, BLS title by occupation, source and years)``."""
    import pandas as pd

    found = find_csv(r, "prompts.reference", ref, base_dir, "bls_cps_2021_women_share.csv")
    df = load_csv(r, "prompts.reference", found, "occupation,women_share,year,source")
    missing = [c for c in ("occupation", "women_share") if c not in df.columns]
    if missing:
        raise r.err(
            "prompts.reference",
            _("{file} lacks column(s) {missing}").format(file=found.name, missing=missing),
            _("the CSV needs columns occupation, women_share (a fraction in [0, 1]), year, source"),
        )
    share = pd.to_numeric(df["women_share"], errors="coerce")
    if df.empty:
        raise r.err(
            "prompts.reference",
            _("{file} has a header but no rows").format(file=found.name),
            _("add one row per occupation: occupation,women_share,year,source"),
        )
    if share.isna().any() or ((share < 0) | (share > 1)).any():
        raise r.err(
            "prompts.reference",
            _("{file}: women_share must be a fraction in [0, 1]").format(file=found.name),
            _("write 86.7% as 0.867"),
        )
    values = dict(zip(df["occupation"].astype(str), share.astype(float)))
    titles = dict(zip(df["occupation"].astype(str), df.get("bls_title", df["occupation"]).astype(str)))
    source = ""
    if "source" in df.columns:
        src = df["source"].dropna().astype(str).unique()
        year = pd.to_numeric(df["year"], errors="coerce") if "year" in df.columns else pd.Series(dtype=float)
        if year.isna().ne(df["year"].isna()).any() if "year" in df.columns else False:
            bad = df.loc[year.isna() & df["year"].notna(), "year"].iloc[0]
            raise r.err(
                "prompts.reference",
                _("{file}: year {year!r} is not a year").format(file=found.name, year=bad),
                _("write the year of the statistics as a number, e.g. 2021"),
            )
        if ((year.dropna() != year.dropna().round()) | (year.dropna() < 1800) | (year.dropna() > 2200)).any():
            raise r.err(
                "prompts.reference",
                _("{file}: a year is not a plausible whole year").format(file=found.name),
                _("write the year of the statistics as a whole number, e.g. 2021"),
            )
        yrs = year.dropna().astype(int).astype(str).unique()
        source = "; ".join(src) + (f" ({', '.join(yrs)})" if len(yrs) else "")
    return values, titles, source


def read_prompt_seeds(r: SpecReader, ref: str, base_dir: Path | None) -> dict[str, int]:
    """``audit.seeds`` as a CSV: one seed per prompt (columns ``prompt`` and ``evaluation_seed`` or ``seed``)."""
    import pandas as pd

    if not ref.lower().endswith(".csv"):
        raise r.err(
            "audit.seeds",
            _("unknown seed scheme {ref!r}").format(ref=ref),
            _("use 'derived', 'counting', or a CSV file of per-prompt seeds (columns prompt, evaluation_seed)"),
        )
    found = find_csv(r, "audit.seeds", ref, base_dir, "uce_sd14_original_bias.csv")
    df = load_csv(r, "audit.seeds", found, "prompt,evaluation_seed")
    col = "evaluation_seed" if "evaluation_seed" in df.columns else "seed"
    if "prompt" not in df.columns or col not in df.columns:
        raise r.err(
            "audit.seeds",
            _("{file} lacks a prompt or a seed column").format(file=found.name),
            _("the CSV needs columns prompt and evaluation_seed (or seed)"),
        )
    seeds = pd.to_numeric(df[col], errors="coerce")
    if seeds.isna().any() or (seeds != seeds.round()).any() or (seeds < 0).any() or (seeds > MAX_SEED).any():
        bad = df.loc[seeds.isna() | (seeds != seeds.round()) | (seeds < 0) | (seeds > MAX_SEED), col].iloc[0]
        raise r.err(
            "audit.seeds",
            _("{file}: seed {seed!r} is not a whole number in [0, {most}]").format(
                file=found.name, seed=bad, most=MAX_SEED
            ),
            _("give every prompt a whole, non-negative seed"),
        )
    prompts = df["prompt"].astype(str)
    if prompts.duplicated().any():
        raise r.err(
            "audit.seeds",
            _("{file}: the prompt {prompt!r} has two rows").format(
                file=found.name, prompt=prompts[prompts.duplicated()].iloc[0]
            ),
            _("give each prompt one seed"),
        )
    return dict(zip(prompts, seeds.astype(int).tolist()))


def read_replication(r: SpecReader, t: dict, base_dir: Path | None) -> ReplicationSpec:
    """``[replication] published``: Fair Diffusion's counts (columns ``occupation, man, woman``) or
    UCE's per-prompt shares (``prompt, male_bias``, 10 images each), as key → (n_female, n)."""
    import pandas as pd

    ref = r.get(t, "replication", "published", str, "")
    if not ref:
        return ReplicationSpec()
    found = find_csv(r, "replication.published", ref, base_dir, "fair_diffusion_sd15_fairface.csv")
    df = load_csv(r, "replication.published", found, "occupation,man,woman,source (or prompt,male_bias)")
    source = "; ".join(df["source"].dropna().astype(str).unique()) if "source" in df.columns else ""
    if {"occupation", "man", "woman"} <= set(df.columns):
        man, woman = (pd.to_numeric(df[c], errors="coerce") for c in ("man", "woman"))
        if man.isna().any() or woman.isna().any() or (man < 0).any() or (woman < 0).any():
            raise r.err(
                "replication.published",
                _("{file}: man and woman must be counts").format(file=found.name),
                _("write whole, non-negative numbers of images"),
            )
        counts = {str(o): (int(w), int(w) + int(m)) for o, m, w in zip(df["occupation"], man, woman)}
        return ReplicationSpec(published=found.name, by="occupation", counts=counts, source=source)
    if {"prompt", "male_bias"} <= set(df.columns):
        from .published import UCE_IMAGES_PER_PROMPT

        share = pd.to_numeric(df["male_bias"], errors="coerce")
        k = share * UCE_IMAGES_PER_PROMPT
        if share.isna().any() or ((k - k.round()).abs() > 1e-6).any() or (share < 0).any() or (share > 1).any():
            raise r.err(
                "replication.published",
                _("{file}: male_bias must be a share of {n} images").format(file=found.name, n=UCE_IMAGES_PER_PROMPT),
                _("write 3 of 10 as 0.3"),
            )
        counts = {
            str(p): (UCE_IMAGES_PER_PROMPT - int(round(x)), UCE_IMAGES_PER_PROMPT) for p, x in zip(df["prompt"], k)
        }
        return ReplicationSpec(published=found.name, by="prompt", counts=counts, source=source)
    raise r.err(
        "replication.published",
        _("{file} has neither occupation,man,woman nor prompt,male_bias columns").format(file=found.name),
        _("give Fair Diffusion's counts per occupation or UCE's male_bias per prompt (see diffkit/audits/)"),
    )
