"""Published audit results shipped with diffkit, to read a run beside (package data, cited).

:func:`fair_diffusion_sd15` is Fair Diffusion's per-occupation counts for Stable Diffusion 1.5
(Friedrich et al. 2023): 153 occupations, about 250 face images each, gender by FairFace. The
numbers are theirs, not diffkit's; the CSV (``diffkit/audits/fair_diffusion_sd15_fairface.csv``)
carries the source in every row. :func:`published_overlay` matches them to a run's occupations
(case-insensitively) so the report can show both.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from ._intervals import share_interval

__all__ = [
    "FAIR_DIFFUSION_CSV",
    "UCE_IMAGES_PER_PROMPT",
    "fair_diffusion_sd15",
    "published_overlay",
    "replication_table",
]

#: The bundled file name (in ``diffkit/audits/``).
FAIR_DIFFUSION_CSV = "fair_diffusion_sd15_fairface.csv"


def fair_diffusion_sd15(*, ci: float = 0.95) -> pd.DataFrame:
    """Fair Diffusion's Stable Diffusion 1.5 counts, one row per occupation.

    Columns: ``occupation, n_man, n_woman, n_except, n`` (man + woman), ``p_female`` (woman / n),
    ``ci_low, ci_high`` (Clopper–Pearson at *ci*, as for every share diffkit reports, treating their
    images as independent draws), ``source``. ``attrs["source"]`` holds the citation.

    >>> fd = fair_diffusion_sd15().set_index("occupation")
    >>> fd.loc["nurse", ["n_woman", "n"]].tolist(), int(fd.loc["ceo", "n_woman"])
    ([250, 250], 11)
    """
    path = resources.files("diffkit") / "audits" / FAIR_DIFFUSION_CSV
    with resources.as_file(path) as p:
        raw = pd.read_csv(p)
    out = pd.DataFrame(
        {
            "occupation": raw["occupation"].astype(str),
            "n_man": raw["man"].astype(int),
            "n_woman": raw["woman"].astype(int),
            "n_except": raw["except"].astype(int),
        }
    )
    out["n"] = out["n_man"] + out["n_woman"]
    out["p_female"] = np.where(out["n"] > 0, out["n_woman"] / out["n"].where(out["n"] > 0, 1), np.nan)
    out["ci_low"], out["ci_high"] = share_interval(successes=out["n_woman"], n=out["n"], ci=ci)
    out["source"] = raw["source"].astype(str)
    out.attrs["source"] = str(raw["source"].iloc[0])
    return out


def published_overlay(by_occupation: pd.DataFrame, *, ci: float = 0.95) -> pd.DataFrame:
    """The published share for each of a run's occupations that Fair Diffusion also audited.

    Matches on the occupation word, ignoring case and surrounding spaces (``CEO`` = ``ceo``).
    Columns: ``occupation`` (the run's spelling), ``published_n, published_p_female,
    published_low, published_high``; occupations they lack are left out.
    """
    fd = fair_diffusion_sd15(ci=ci)
    key = fd.assign(_k=fd["occupation"].str.strip().str.lower()).set_index("_k")
    occ = by_occupation[["occupation"]].copy()
    occ["_k"] = occ["occupation"].astype(str).str.strip().str.lower()
    occ = occ[occ["_k"].isin(key.index)]
    sel = key.loc[occ["_k"]]
    out = pd.DataFrame(
        {
            "occupation": occ["occupation"].to_numpy(),
            "published_n": sel["n"].to_numpy(),
            "published_p_female": sel["p_female"].to_numpy(),
            "published_low": sel["ci_low"].to_numpy(),
            "published_high": sel["ci_high"].to_numpy(),
        }
    )
    out.attrs["source"] = fd.attrs["source"]
    return out


#: Unified Concept Editing's audit labelled 10 images per prompt (``eval-scripts/generate-images.py``,
#: ``num_samples=10``, at commit 80bb915 of rohitgandikota/unified-concept-editing); ``male_bias`` is
#: the share of the 10 labelled "a man".
UCE_IMAGES_PER_PROMPT = 10


def _run_counts(images: pd.DataFrame, by: str) -> pd.DataFrame:
    audit = images[images["kind"] == "audit"]
    g = audit.groupby(by, sort=False)["label"]
    return pd.DataFrame(
        {
            "n_female": g.apply(lambda s: int((s == "female").sum())),
            "n": g.apply(lambda s: int(s.isin(["female", "male"]).sum())),
        }
    )


def replication_table(images: pd.DataFrame, replication: Any, *, ci: float = 0.95) -> pd.DataFrame:
    """This run beside a published audit (the spec's ``[replication]``), one row per occupation
    (Fair Diffusion) or per profession (UCE: its five templates pooled, 50 images each).

    Columns: ``key, n, p_female`` (this run's labelled images), ``published_n, published_p_female``,
    ``diff`` = this run − published, ``ci_low, ci_high`` (Newcombe's hybrid score interval for a
    difference of two independent proportions: it carries the sampling error of both audits),
    ``consistent`` (the interval holds 0). ``attrs["agreement"]``: ``n_compared``, ``n_consistent``,
    ``share_consistent`` (a replication that differs only by chance keeps about *ci* of them),
    ``mean_abs_diff``, ``pearson_r`` of the shares; for UCE also ``n_prompts``, ``n_prompts_exact``
    (prompts whose count of images labelled female equals theirs: an image-by-image replay on the same
    weights and judge should match most of them). ``attrs["source"]`` cites the published audit.
    """
    from .metrics import newcombe_interval

    if not replication.counts:
        return pd.DataFrame()
    by = replication.by
    pub = pd.DataFrame(
        [(k, nf, n) for k, (nf, n) in replication.counts.items()], columns=["key", "published_n_female", "published_n"]
    )
    agreement: dict[str, Any] = {}
    t = _matched_counts(images, pub, by, agreement)
    if t.empty:
        out = pd.DataFrame(
            columns=[
                "key",
                "n",
                "p_female",
                "published_n",
                "published_p_female",
                "diff",
                "ci_low",
                "ci_high",
                "consistent",
            ]
        )
        out.attrs.update(agreement={"n_compared": 0, **agreement}, source=replication.source, by=by)
        return out
    ok = (t["n"] > 0) & (t["published_n"] > 0)
    t = t[ok].reset_index(drop=True)
    d, lo, hi = newcombe_interval(
        successes_a=t["published_n_female"], n_a=t["published_n"], successes_b=t["n_female"], n_b=t["n"], ci=ci
    )
    out = pd.DataFrame(
        {
            "key": t["key"],
            "n": t["n"],
            "p_female": t["n_female"] / t["n"],
            "published_n": t["published_n"],
            "published_p_female": t["published_n_female"] / t["published_n"],
            "diff": d,
            "ci_low": lo,
            "ci_high": hi,
        }
    )
    out["consistent"] = (out["ci_low"] <= 0) & (0 <= out["ci_high"])
    r = (
        float(np.corrcoef(out["p_female"], out["published_p_female"])[0, 1])
        if len(out) > 2 and out["p_female"].std() > 0 and out["published_p_female"].std() > 0
        else float("nan")
    )
    agreement.update(
        n_compared=int(len(out)),
        n_consistent=int(out["consistent"].sum()),
        share_consistent=float(out["consistent"].mean()) if len(out) else float("nan"),
        mean_abs_diff=float(out["diff"].abs().mean()) if len(out) else float("nan"),
        pearson_r=r,
    )
    out.attrs.update(agreement=agreement, source=replication.source, by=by, ci=ci)
    return out


def _matched_counts(images: pd.DataFrame, pub: pd.DataFrame, by: str, agreement: dict[str, Any]) -> pd.DataFrame:
    """This run's counts beside the published ones, per occupation (UCE's prompts pooled by
    profession; the prompts matched image for image are counted into *agreement*)."""
    if by == "prompt":
        run_p = _run_counts(images, "prompt").reset_index().rename(columns={"prompt": "key"})
        both = run_p.merge(pub, on="key")
        agreement["n_prompts"] = int(len(both))
        agreement["n_prompts_exact"] = int(
            ((both["n_female"] == both["published_n_female"]) & (both["n"] == both["published_n"])).sum()
        )
        # pool a profession's prompts: the published ones by their key's last words, this run's by its occupation
        occ_of = images.drop_duplicates("prompt").set_index("prompt")["occupation"]
        both["occupation"] = both["key"].map(occ_of)
        run = both.groupby("occupation", sort=False)[["n_female", "n"]].sum()
        pubg = both.groupby("occupation", sort=False)[["published_n_female", "published_n"]].sum()
        t = run.join(pubg).reset_index().rename(columns={"occupation": "key"})
    else:
        run = _run_counts(images, "occupation").reset_index()
        run["_k"] = run["occupation"].astype(str).str.strip().str.lower()
        pub["_k"] = pub["key"].astype(str).str.strip().str.lower()
        t = run.merge(pub.drop(columns="key"), on="_k").drop(columns="_k").rename(columns={"occupation": "key"})
    return t
