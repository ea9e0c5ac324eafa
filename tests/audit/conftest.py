"""Shared fixtures: a tiny random SD pipeline folder and a random open_clip judge (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from audit_helpers import spec_dict

from diffkit.audit._testing import save_test_clip
from diffkit.audit.spec import parse_spec
from diffkit.testing import save_tiny_random_pipeline

# One thread: the 2 shared cores are oversubscribed anyway, and subprocesses started by the
# tests (OMP_NUM_THREADS=1) then compute bit-identical images.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def pipe_dir(tmp_path_factory) -> Path:
    return save_tiny_random_pipeline(tmp_path_factory.mktemp("pipe") / "sd")


@pytest.fixture(scope="session")
def clip_name(tmp_path_factory) -> str:
    return save_test_clip(tmp_path_factory.mktemp("clip") / "judge")


@pytest.fixture(scope="session")
def pipe(pipe_dir):
    from diffkit import load_pipeline

    return load_pipeline(pipe_dir, device="cpu", dtype="float32")


@pytest.fixture
def make_spec(pipe_dir, clip_name):
    def make(**over):
        return parse_spec(spec_dict(pipe_dir, clip_name, **over), source="unit.toml")

    return make
