"""The shipped judge's person gate, pushed images it must not read as one person through the audit's
own scoring (a run folder, its ledger, the cache): nobody, two people, blends and half-drawn figures."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
from audit_helpers import write_as_run

from diffkit.audit import parse_spec, score_images
from diffkit.audit.spec import AUDITS_DIR
from diffkit.tiny import world as w

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Each seeded set and the outcome the gate must give at least 90 % of it (world.SCENE_OUTCOMES).
SETS = {
    "blank": "no_person",
    "background": "no_person",
    "object": "no_person",
    "noise": "no_person",
    "people": "several_people",
    "blend": "abstain",
    "partial": "abstain",
    "person": "the drawn gender",
}
N = 40


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    d = tomllib.loads((AUDITS_DIR / "tiny_default.toml").read_text())
    d["audit"].update(images_per_prompt=N, name="gate")
    d["prompts"] = {"templates": ["{occupation}"], "attributes": {"occupation": list(SETS)}}
    d.pop("controls")
    d["classifier"] = copy.deepcopy(d["classifier"])
    spec = parse_spec(d, source="gate.toml")
    scenes = {k: w.scene_set(k, N, seed=2026, size=128, **({"alpha": 0.5} if k == "blend" else {})) for k in SETS}
    run = tmp_path_factory.mktemp("gate") / "run"
    write_as_run(spec, run, [[im for _, im in scenes[k]] for k in SETS])
    table = score_images(spec, run, progress=False)
    return table, scenes


@pytest.mark.parametrize("kind", [k for k in SETS if k != "person"])
def test_the_gate_says_what_each_set_is(scored, kind):
    table, _ = scored
    labels = table.loc[table["prompt"] == kind, "label"]
    share = float((labels == SETS[kind]).mean())
    assert len(labels) == N and share >= 0.9, labels.value_counts().to_dict()


def test_one_drawn_person_keeps_their_gender(scored):
    """Never the other gender; a few may abstain (the threshold that makes blends abstain costs that)."""
    table, scenes = scored
    t = table[table["prompt"] == "person"]
    truth = np.array(["female" if s.genders[0] == "woman" else "male" for s, _ in scenes["person"]])
    labels = t["label"].to_numpy()
    assert (labels == truth).mean() >= 0.9, t["label"].value_counts().to_dict()
    assert ((labels != truth) & (labels != "abstain")).sum() == 0, t["label"].value_counts().to_dict()


def test_a_blacked_out_image_stays_blacked_out(tmp_path):
    """A black picture is a safety checker's, whatever the judge thinks of it."""
    from PIL import Image

    d = tomllib.loads((AUDITS_DIR / "tiny_default.toml").read_text())
    d["audit"].update(images_per_prompt=2, name="black")
    d["prompts"] = {"templates": ["{occupation}"], "attributes": {"occupation": ["nurse"]}}
    d.pop("controls")
    spec = parse_spec(d, source="black.toml")
    write_as_run(spec, tmp_path / "run", [[Image.new("RGB", (128, 128)), Image.new("RGB", (128, 128))]])
    assert (score_images(spec, tmp_path / "run", progress=False)["label"] == "blacked_out").all()
