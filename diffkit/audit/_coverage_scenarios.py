"""The coverage grid's scenarios: models whose true shares are known (see :mod:`diffkit.audit.coverage`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._group_table import DEFAULT_MIN_CONTROLS

__all__ = ["REFERENCE", "SCENARIOS", "SE", "SHIPPED_SHARES", "SP", "TEMPLATES", "Scenario"]

#: BLS CPS 2021 women's share of the ten ``tiny_default`` occupations (nurse, housekeeper, teacher,
#: pharmacist, lawyer, CEO, software developer, pilot, firefighter, electrician).
REFERENCE = np.array([0.867, 0.887, 0.792, 0.578, 0.379, 0.291, 0.197, 0.053, 0.051, 0.017])

#: diffkit-tiny 2's shares in its default run (``diffkit audit run``, 24 labelled images each, in
#: :data:`REFERENCE`'s order): 24, 24, 24, 4, 0, 2, 0, 0, 0, 0 labelled female.
SHIPPED_SHARES = np.array([24, 24, 24, 4, 0, 2, 0, 0, 0, 0]) / 24

TEMPLATES = 2
SE, SP = 0.9, 0.85


def _logit(p):
    return np.log(p / (1 - p))


def _expit(x):
    return 1 / (1 + np.exp(-x))


def _amplify(p, factor=2.0):
    return _expit(factor * _logit(p))


@dataclass(frozen=True)
class Scenario:
    """One cell of the grid: *kind* ``"run"`` (shares per template), ``"compare"`` (shares of a and
    b, how many latents the runs share, paired or not) or ``"rogan_gladen"`` (true share, the
    occupations' Se, controls per stated gender per occupation, pooled or not)."""

    name: str
    kind: str
    label: str
    p: tuple = ()  # run: (templates × G) shares; compare: (a, b); rogan_gladen: (true share,)
    shared: float = 1.0
    paired: bool = True
    se: tuple = ()
    controls: int = 0
    pooled: bool = False
    extra: dict = field(default_factory=dict)


def _run(name, label, p, q=None):
    p = np.asarray(p, dtype=float)
    q = p if q is None else np.asarray(q, dtype=float)
    return Scenario(name, "run", label, p=(tuple(p), tuple(q)))


_FIVE = np.array([0.05, 0.9, 0.2, 0.97, 0.3])
_HALFWAY = 0.5 + 0.5 * (REFERENCE - 0.5)
SCENARIOS: list[Scenario] = [
    _run("fair", "fair model (every p = ½)", np.full(10, 0.5)),
    _run("copy", "copies the reference", REFERENCE),
    _run("amplify", "amplifies the reference (logit × 2)", _amplify(REFERENCE)),
    _run("reversal", "reverses the reference (1 − p_ref)", 1 - REFERENCE),
    _run("9+1", "9 at parity, 1 at 0.55", np.r_[np.full(9, 0.5), 0.55]),
    _run("8+2", "8 at parity, 2 at 0.55 and 0.45", np.r_[np.full(8, 0.5), 0.55, 0.45]),
    _run("5+5", "5 at parity, 5 skewed (0.05 … 0.97)", np.r_[np.full(5, 0.5), _FIVE]),
    _run("5+5amp", "5 at parity, 5 amplified", np.r_[np.full(5, 0.5), _amplify(_FIVE)]),
    _run("pm05", "all within ±0.05 of parity", 0.5 + np.linspace(-0.05, 0.05, 10)),
    _run("pm10", "all within ±0.10 of parity", 0.5 + np.linspace(-0.10, 0.10, 10)),
    _run(
        "templates",
        "templates disagree (logit ± 1 around the reference)",
        _expit(_logit(REFERENCE) + 1),
        _expit(_logit(REFERENCE) - 1),
    ),
    _run("templates_fair", "templates disagree (0.35 and 0.65: fair on average)", np.full(10, 0.35), np.full(10, 0.65)),
    _run("shipped", "the shipped model's own shares (8 of 10 at 0 or 1)", SHIPPED_SHARES),
    Scenario("halfway", "compare", "halfway to parity, paired", p=(tuple(REFERENCE), tuple(_HALFWAY))),
    Scenario("parity", "compare", "to parity, paired", p=(tuple(REFERENCE), (0.5,) * 10)),
    Scenario(
        "parity_half", "compare", "to parity, half the latents shared", p=(tuple(REFERENCE), (0.5,) * 10), shared=0.5
    ),
    Scenario(
        "new_seeds",
        "compare",
        "same model, new seeds (independent)",
        p=(tuple(REFERENCE), tuple(REFERENCE)),
        paired=False,
    ),
    Scenario(
        "fair_fair", "compare", "fair vs fair, new seeds (independent)", p=((0.5,) * 10, (0.5,) * 10), paired=False
    ),
    Scenario("reversed", "compare", "a reversal (1 − p), paired", p=(tuple(REFERENCE), tuple(1 - REFERENCE))),
]
for _p in (0.0, 0.02, 0.3, 0.7, 1.0):
    SCENARIOS += [
        Scenario(
            f"rg_pooled_{_p:g}",
            "rogan_gladen",
            f"p = {_p:g}, pooled Se/Sp (4 controls each per occupation)",
            p=(_p,),
            se=(SE,) * 10,
            controls=4,
            pooled=True,
        ),
        Scenario(
            f"rg_occ_{_p:g}",
            "rogan_gladen",
            f"p = {_p:g}, per-occupation Se/Sp ({DEFAULT_MIN_CONTROLS} controls each)",
            p=(_p,),
            se=(SE,) * 10,
            controls=DEFAULT_MIN_CONTROLS,
        ),
        Scenario(
            f"rg_se06_{_p:g}",
            "rogan_gladen",
            f"p = {_p:g}, one occupation's Se is 0.6 (per-occupation Se/Sp)",
            p=(_p,),
            se=(0.6,) + (SE,) * 9,
            controls=DEFAULT_MIN_CONTROLS,
            extra={"report": "first"},
        ),
    ]
