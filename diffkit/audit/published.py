"""Published audit results shipped with diffkit, to read a run beside (package data, cited).

:func:`fair_diffusion_sd15` is Fair Diffusion's per-occupation counts for Stable Diffusion 1.5
(Friedrich et al. 2023): 153 occupations, about 250 face images each, gender by FairFace. The
numbers are theirs, not diffkit's; the CSV (``diffkit/audits/fair_diffusion_sd15_fairface.csv``)
carries the source in every row. :func:`published_overlay` matches them to a run's occupations
(case-insensitively) so the report can show both.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

from ._intervals import share_interval

__all__ = ["FAIR_DIFFUSION_CSV", "fair_diffusion_sd15", "published_overlay"]

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
    out = pd.DataFrame({"occupation": raw["occupation"].astype(str), "n_man": raw["man"].astype(int),
                        "n_woman": raw["woman"].astype(int), "n_except": raw["except"].astype(int)})
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
    out = pd.DataFrame({"occupation": occ["occupation"].to_numpy(), "published_n": sel["n"].to_numpy(),
                        "published_p_female": sel["p_female"].to_numpy(), "published_low": sel["ci_low"].to_numpy(),
                        "published_high": sel["ci_high"].to_numpy()})
    out.attrs["source"] = fd.attrs["source"]
    return out
