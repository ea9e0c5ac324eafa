from __future__ import annotations

import os

import matplotlib
import pytest

matplotlib.use("Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
# The tests read diffkit in English whatever the machine's locale (LANG=es_ES… would make it speak
# Spanish); tests/test_i18n.py asks for Spanish itself (set_language, DIFFKIT_LANG=es).
os.environ["DIFFKIT_LANG"] = "en"


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    """A tiny random StableDiffusionPipeline saved with save_pretrained (safetensors)."""
    from diffkit.testing import save_tiny_random_pipeline

    return save_tiny_random_pipeline(tmp_path_factory.mktemp("tiny-sd") / "pipe", "sd")


@pytest.fixture(scope="session")
def tiny_sd(tiny_sd_dir):
    """The tiny random pipeline, loaded back through diffkit.load_pipeline like a hub id."""
    from diffkit import load_pipeline

    return load_pipeline(tiny_sd_dir, device="cpu")


@pytest.fixture
def english_environment(monkeypatch):
    """No language chosen and none in the environment at the start (DIFFKIT_LANG, the locale
    variables), and the process left as found (``set_language(None)``): the i18n tests use it."""
    from diffkit.i18n import ENVIRONMENT, set_language

    for var in ENVIRONMENT:
        monkeypatch.delenv(var, raising=False)
    set_language(None)
    yield
    set_language(None)
