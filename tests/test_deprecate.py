"""Renamed arguments keep their old names for one release, with a FutureWarning that names the new one."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pytest

from diffkit._deprecate import REMOVED_IN, renamed_attribute, renamed_kwargs


@renamed_kwargs(random_state="seed", batch="batch_size")
def draw(x, *, seed=None, batch_size=1):
    return x, seed, batch_size


@renamed_kwargs(guidance="guidance_scale")
@dataclass(frozen=True)
class Settings:
    guidance_scale: float = 7.5

    guidance = renamed_attribute("guidance_scale")


def test_old_keyword_names_warn_and_pass_through():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert draw(1, seed=2, batch_size=3) == (1, 2, 3)  # the new names do not warn
    with pytest.warns(FutureWarning) as rec:
        assert draw(1, random_state=2, batch=3) == (1, 2, 3)
    assert [str(w.message) for w in rec] == [
        f"draw(random_state=...) is deprecated; use seed=... instead (random_state is removed in diffkit {REMOVED_IN})",
        f"draw(batch=...) is deprecated; use batch_size=... instead (batch is removed in diffkit {REMOVED_IN})",
    ]
    assert rec[0].filename == __file__  # the warning points at the caller
    with pytest.raises(
        TypeError, match=r"draw\(\) got both random_state= and seed=; fix: pass only seed="
    ):
        draw(1, random_state=2, seed=2)


def test_classes_and_attributes():
    with pytest.warns(
        FutureWarning, match=r"Settings\(guidance=\.\.\.\) is deprecated; use guidance_scale="
    ):
        s = Settings(guidance=3.0)
    assert s == Settings(guidance_scale=3.0)
    with pytest.warns(
        FutureWarning, match=r"Settings\.guidance is deprecated; use Settings\.guidance_scale"
    ) as rec:
        assert s.guidance == 3.0
    assert rec[0].filename == __file__
    assert isinstance(
        Settings.guidance, renamed_attribute
    )  # the class attribute itself does not warn


def test_the_signature_shown_is_the_new_one():
    import inspect

    assert list(inspect.signature(draw).parameters) == ["x", "seed", "batch_size"]
