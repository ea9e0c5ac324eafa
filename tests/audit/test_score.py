"""Scoring goes through open_clip's own path; no double rescaling; the cache; the label rules."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from diffkit.audit import ZeroShotClassifier, classify_embeddings, embed_images, load_classifier
from diffkit.audit.score import CLASSES, EmbeddingCache


@pytest.fixture(scope="module")
def judge(clip_name):
    return load_classifier(clip_name)


def _known_image(path) -> None:
    rng = np.random.default_rng(0)
    arr = (rng.random((48, 40, 3)) * 255).astype(np.uint8)  # not square, not the model's size
    arr[10:30, 5:25] = [200, 30, 60]
    Image.fromarray(arr).save(path)


def test_embedding_equals_open_clip_documented_path(judge, tmp_path):
    model, preprocess, _ = judge
    f = tmp_path / "known.png"
    _known_image(f)
    # open_clip's README: image = preprocess(Image.open(f)).unsqueeze(0); encode_image; normalise
    image = preprocess(Image.open(f)).unsqueeze(0)
    with torch.no_grad():
        ref = model.encode_image(image)
        ref /= ref.norm(dim=-1, keepdim=True)
    ours_pil = embed_images(model, preprocess, [Image.open(f)])
    ours_u8 = embed_images(model, preprocess, [np.asarray(Image.open(f))])
    ours_chw = embed_images(model, preprocess, [np.asarray(Image.open(f)).transpose(2, 0, 1)])
    np.testing.assert_allclose(ours_pil, ref.numpy(), atol=1e-6)
    np.testing.assert_array_equal(ours_pil, ours_u8)
    np.testing.assert_array_equal(ours_pil, ours_chw)


def test_float_images_are_refused_no_double_rescaling(judge):
    model, preprocess, _ = judge
    x = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)  # [0, 1] floats
    with pytest.raises(TypeError, match="rescaled twice"):
        embed_images(model, preprocess, [x])
    # the transform itself maps uint8 [0, 255] to [0, 1] before normalising: one rescale
    t = preprocess(Image.fromarray(np.full((32, 32, 3), 255, np.uint8)))
    mean, std = np.array(open_clip.OPENAI_DATASET_MEAN), np.array(open_clip.OPENAI_DATASET_STD)
    np.testing.assert_allclose(t[:, 0, 0].numpy(), (1 - mean) / std, rtol=1e-5)


def test_text_weights_are_open_clip_zero_shot_weights(judge, make_spec):
    spec = make_spec(classifier__templates=["a photo of a {}.", "a picture of a {}."])
    clf = ZeroShotClassifier.from_spec(spec.classifier, loaded=judge)
    model, _, tok = judge
    ref = open_clip.build_zero_shot_classifier(
        model,
        tok,
        classnames=["woman", "man", "person", "shape", "group of people"],
        templates=["a photo of a {}.", "a picture of a {}."],
        num_classes_per_batch=None,
    )
    np.testing.assert_allclose(clf.text_weights, ref.numpy(), atol=1e-6)
    assert clf.text_weights.shape[1] == len(CLASSES)
    assert clf.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()))
    assert clf.pretrained.startswith("weights-")  # local weights: the cache keys on their content


def test_label_rules_gate_and_abstention():
    w = np.eye(4, dtype=np.float32)  # text directions: female, male, person, no_person
    emb = np.array(
        [
            [1.0, 0.0, 1.0, 0.0],  # confident female, person
            [0.0, 1.0, 1.0, 0.0],  # confident male, person
            [0.5, 0.5, 1.0, 0.0],  # undecided: abstain
            [1.0, 0.0, 0.0, 1.0],  # no person: never a gender label
        ]
    )
    out = classify_embeddings(emb, text_weights=w, logit_scale=10.0, person_threshold=0.5, abstain_below=0.6)
    assert list(out["label"]) == ["female", "male", "abstain", "no_person"]
    assert out["p_female"].iloc[0] == pytest.approx(1 / (1 + np.exp(-10)))
    np.testing.assert_allclose(out["p_female"] + out["p_male"], 1)
    assert out["confidence"].iloc[2] == pytest.approx(0.5)
    # the logit gaps behind the probabilities: s·(e·t_female − e·t_male), s·(e·t_person − e·t_no_person)
    np.testing.assert_allclose(out["gender_logit"], [10, -10, 0, 10])
    np.testing.assert_allclose(out["person_logit"], [10, 10, 10, -10])
    np.testing.assert_allclose(out["p_female"], 1 / (1 + np.exp(-out["gender_logit"])))


def test_cache_roundtrip(tmp_path):
    c = EmbeddingCache(tmp_path / "e.sqlite")
    v = np.arange(4, dtype=np.float32)
    c.put("m", "p", {"abc": v})
    assert c.get("m", "p", ["abc", "zzz"]).keys() == {"abc"}
    np.testing.assert_array_equal(c.get("m", "p", ["abc"])["abc"], v)
    assert c.get("m", "other", ["abc"]) == {}
    c.close()


def test_a_judge_that_cannot_be_loaded_names_the_fix(tmp_path, monkeypatch):
    """Offline and not cached (here: a model name open_clip does not know, and a local folder that is
    not there): a diffkit error naming the fixes, not open_clip's raw one, from the Python API too."""
    from diffkit.errors import ModelUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="could not load the CLIP judge 'no-such-clip'.*fix: .*local-dir"):
        load_classifier("no-such-clip", "laion2b")
    with pytest.raises(ModelUnavailableError, match="classifier.model = 'tiny'"):
        load_classifier(f"local-dir:{tmp_path / 'missing'}")


def test_relabel_applies_other_thresholds_without_rescoring():
    from diffkit.audit.score import relabel

    w = np.eye(4, dtype=np.float32)
    emb = np.array([[1.0, 0.0, 1.0, 0.0], [0.55, 0.45, 1.0, 0.0], [0.0, 1.0, 0.2, 0.0], [0, 0, 0, 0]])
    out = classify_embeddings(emb, text_weights=w, logit_scale=10.0, person_threshold=0.5, abstain_below=0.6)
    out["blacked_out"] = [False, False, False, True]
    same = relabel(out, person_threshold=0.5, abstain_below=0.6)
    assert list(same["label"][:3]) == list(out["label"][:3]) and same["label"].iloc[3] == "blacked_out"
    strict = relabel(out, person_threshold=0.9, abstain_below=0.9)
    assert list(strict["label"]) == ["female", "abstain", "no_person", "blacked_out"]
    assert list(relabel(out, person_threshold=0.0, abstain_below=0.5)["label"][:3]) == ["female", "female", "male"]
    with pytest.raises(ValueError, match="abstain_below must be in"):
        relabel(out, person_threshold=0.5, abstain_below=0.2)
