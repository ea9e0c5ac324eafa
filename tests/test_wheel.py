"""The wheel carries what an installed diffkit needs: specs, reference tables, diffkit-tiny.

The full check (a fresh venv outside the repository, ``diffkit demo`` and a small audit from an
empty folder) is ``make wheel-check`` (``.ci/wheel_check.sh``), which CI runs after ``make test``.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import diffkit
from diffkit.audit.spec import AUDITS_DIR, bundled_specs

REPO = Path(__file__).resolve().parents[1]


def test_bundled_specs_are_package_data():
    package = Path(diffkit.__file__).resolve().parent
    assert AUDITS_DIR.resolve().is_relative_to(package)  # not parents[2] / "audits", outside the package
    assert {"tiny_default", "sd15_occupations"} <= set(bundled_specs())
    assert (REPO / "audits").resolve() == AUDITS_DIR.resolve()  # the top-level folder is the same one


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = out.glob("diffkit-*.whl")
    return whl


def test_wheel_holds_specs_tables_and_weights(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for spec in bundled_specs():
        assert f"diffkit/audits/{spec}.toml" in names
    assert "diffkit/audits/bls_cps_2021_women_share.csv" in names
    for rel in (
        "pipeline/model_index.json",
        "pipeline/unet/diffusion_pytorch_model.safetensors",
        "pipeline/vae/diffusion_pytorch_model.safetensors",
        "pipeline/text_encoder/model.safetensors",
        "pipeline/tokenizer/tokenizer.json",
        "pipeline/scheduler/scheduler_config.json",
        "clip/open_clip_model.safetensors",
        "clip/diffkit-tiny-clip.json",
    ):
        assert f"diffkit/tiny/weights/{rel}" in names
    assert "diffkit/py.typed" in names and "diffkit/tiny/MODEL_CARD.md" in names
    # the Spanish catalogue, compiled, and the report's templates (issue 26)
    assert "diffkit/locale/es/LC_MESSAGES/diffkit.mo" in names
    assert {"diffkit/audit/templates/report.html.j2", "diffkit/audit/templates/compare.html.j2"} <= names
    assert not [n for n in names if n.startswith(("tests/", "audits/", "notebooks/"))]


def test_wheel_declares_the_command_and_dependencies(wheel):
    z = zipfile.ZipFile(wheel)
    (entry,) = [n for n in z.namelist() if n.endswith("entry_points.txt")]
    assert "diffkit = diffkit.cli:main" in z.read(entry).decode()
    (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
    requires = [line for line in z.read(meta).decode().splitlines() if line.startswith("Requires-Dist:")]
    for dep in ("torch", "diffusers", "transformers", "open_clip_torch", "safetensors", "pandas"):
        assert any(line.split()[1].startswith(dep) for line in requires), dep
