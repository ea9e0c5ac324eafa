"""Pluggable labellers: one protocol, chosen in the spec's [classifier]; each kind runs offline on
stand-ins the tests build (the pictogram world's figure detector, diffkit-tiny CLIP with a fixed head)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from audit_helpers import write_as_run

from diffkit.audit import load_spec, parse_spec, run_audit, score_images
from diffkit.audit._testing import pictogram_figures, tiny_clip_gender_head
from diffkit.audit.labellers import (
    FaceCountGate,
    FaceCropClassifier,
    Labeller,
    build_labeller,
    load_entry_point,
)
from diffkit.audit.spec import AUDITS_DIR
from diffkit.errors import InputError, MissingPackageError, WeightsMissingError
from diffkit.tiny import world as w

STAND_INS = {"detector": "diffkit.audit._testing:pictogram_figures"}
FACE_CROP = {
    "kind": "face_crop",
    "model": "diffkit.audit._testing:tiny_clip_gender_head",
    "label_map": {"female": 0, "male": 1},
    "crop_size": 64,
    "abstain_below": 0.6,
    **STAND_INS,
}
KINDS = ("person", "people", "background")


def _scene_spec(classifier: dict, n: int):
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    d = tomllib.loads((AUDITS_DIR / "tiny_default.toml").read_text())
    d["audit"].update(images_per_prompt=n, name="scenes")
    d["prompts"] = {"templates": ["{occupation}"], "attributes": {"occupation": list(KINDS)}}
    d.pop("controls")
    d["classifier"] = {**copy.deepcopy(d["classifier"]), **classifier}
    return parse_spec(d, source="scenes.toml")


def _scenes(n: int):
    return {k: w.scene_set(k, n, seed=23, size=128) for k in KINDS}


@pytest.mark.parametrize("classifier", [{"gate": "faces", **STAND_INS}, FACE_CROP], ids=["clip+faces", "face_crop"])
def test_each_labeller_reads_people_nobody_and_two(classifier, tmp_path):
    n = 12
    spec = _scene_spec(classifier, n)
    scenes = _scenes(n)
    write_as_run(spec, tmp_path / "run", [[im for _, im in scenes[k]] for k in KINDS])
    t = score_images(spec, tmp_path / "run", progress=False)
    by = {k: t[t["prompt"] == k] for k in KINDS}
    assert (by["background"]["label"] == "no_person").all()
    assert (by["people"]["label"] == "several_people").all()
    truth = np.array(["female" if s.genders[0] == "woman" else "male" for s, _ in scenes["person"]])
    assert (by["person"]["label"].to_numpy() == truth).mean() >= 0.9
    assert by["person"]["n_faces"].eq(1).all() and by["people"]["n_faces"].eq(2).all()
    assert t.attrs["classifier"]["pretrained"].count("detector") + t.attrs["classifier"]["pretrained"].count("faces")
    # the cache holds each labeller's features: scoring again reads them back
    again = score_images(spec, tmp_path / "run", progress=False)
    np.testing.assert_array_equal(again["p_female"].to_numpy(), t["p_female"].to_numpy())


def test_the_labellers_follow_one_protocol():
    spec = _scene_spec(FACE_CROP, 1).classifier
    crop = build_labeller(spec)
    gate = build_labeller(_scene_spec({"gate": "faces", **STAND_INS}, 1).classifier)
    clip = build_labeller(_scene_spec({}, 1).classifier)
    assert isinstance(crop, FaceCropClassifier) and isinstance(gate, FaceCountGate)
    for lab in (crop, gate, clip):
        assert isinstance(lab, Labeller)
        img = w.scene_set("person", 1, size=128)[0][1]
        f = lab.features([lab.prepare(img)])
        assert f.shape == (1, lab.feature_dim)
        row = lab.classify(f).iloc[0]
        assert row["label"] in ("female", "male", "abstain") and 0 <= row["p_female"] <= 1


def test_a_face_crop_crops_the_largest_face_with_its_margin():
    lab = FaceCropClassifier(
        _scene_spec({**FACE_CROP, "crop_margin": 0.5}, 1).classifier,
        module=tiny_clip_gender_head(),
        detector=pictogram_figures(),
    )
    img = np.zeros((100, 100, 3), np.uint8)
    crop = lab.crop(img, (40, 40, 60, 80))  # 20 × 40: the square side is 40 × (1 + 2 × 0.5) = 80
    assert crop.size == (64, 64)


def test_entry_points_that_cannot_be_used_name_the_fix():
    with pytest.raises(MissingPackageError, match="cannot import 'no_such_pkg.x'.*fix: install"):
        load_entry_point("no_such_pkg.x:f")
    with pytest.raises(InputError, match="has no 'nope'"):
        load_entry_point("diffkit.audit.faces:nope")
    with pytest.raises(InputError, match="not a 'module:callable'"):
        load_entry_point("fairface")
    from diffkit.audit.faces import dlib_cnn, fairface

    with pytest.raises(WeightsMissingError, match="res34_fair_align_multi_7"):
        fairface(None)
    try:
        import dlib  # noqa: F401
    except ImportError:
        with pytest.raises(MissingPackageError, match="pip install dlib"):
            dlib_cnn("/x.dat")


def test_a_module_that_is_not_a_classifier_is_refused():
    spec = _scene_spec({**FACE_CROP, "model": "diffkit.audit._testing:pictogram_figures"}, 1).classifier
    with pytest.raises(InputError, match="not a torch.nn.Module"):
        FaceCropClassifier(spec)


def test_fairface_adapter_builds_fairfaces_network(tmp_path):
    """The adapter loads a FairFace-shaped state dict (ResNet-34, 18 outputs) into torchvision's network."""
    import torch
    from torchvision.models import resnet34

    from diffkit.audit.faces import FAIRFACE_LABEL_MAP, fairface

    net = resnet34(weights=None)
    net.fc = torch.nn.Linear(net.fc.in_features, 18)
    torch.save(net.state_dict(), tmp_path / "res34.pt")
    loaded = fairface(str(tmp_path / "res34.pt"))
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net.eval()(x))
    assert FAIRFACE_LABEL_MAP == {"female": 8, "male": 7}


@pytest.mark.parametrize(
    "classifier", [{}, {"gate": "faces", **STAND_INS}, FACE_CROP], ids=["open_clip", "open_clip+faces", "face_crop"]
)
def test_audit_run_with_each_labeller_kind(classifier, tmp_path, capsys):
    """`diffkit audit run` end to end on diffkit-tiny with each labeller."""
    from audit_helpers import to_toml

    from diffkit.cli import main

    d = load_spec("tiny_default").to_dict()  # only to check the bundled spec loads; the run uses a small one
    assert d["classifier"]["kind"] == "open_clip"
    spec = {
        "audit": {"name": "kinds", "seed": 3, "images_per_prompt": 2, "batch_size": 4},
        "prompts": {"templates": ["a photo of {a_occupation}"], "attributes": {"occupation": ["nurse", "pilot"]}},
        "controls": {"templates": ["a {gender} {occupation}"], "images_per_prompt": 1},
        "pipeline": {"model": "tiny", "steps": 10, "guidance_scale": 7.5},
        "classifier": {"model": "tiny", "templates": ["a photo of a {}"], **classifier},
        "report": {"n_boot": 50, "thumbnails_per_prompt": 1},
    }
    (tmp_path / "k.toml").write_text(to_toml(spec))
    assert main(["audit", "run", str(tmp_path / "k.toml"), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    html = (tmp_path / "run" / "report" / "index.html").read_text()
    kind = classifier.get("kind", "open_clip")
    assert f"classifier\n{kind}" in html or f"classifier {kind}" in html
    result = run_audit(parse_spec(spec, source="k.toml"), out=tmp_path / "run", progress=False)  # resumes
    # 10-step pictures carry stray dark streaks that the stand-in detector may count as a second figure
    # (3 of 8 here), so only half need be read for a gender
    assert result.images["label"].isin(["female", "male", "abstain"]).mean() >= 0.5
