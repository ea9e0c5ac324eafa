#!/usr/bin/env bash
# The gap between a checkout and a real install: build the wheel, install it with its
# dependencies in a fresh venv outside the repository, and run the demo and a small audit
# from an empty folder. Usage: bash .ci/wheel_check.sh [python]   (default: .venv/bin/python)
# Environment: WHEEL_FROM=HEAD builds the last commit (git archive) instead of the working tree;
# WHEEL_VENV=dir keeps the test venv there and reuses it (only the wheel is reinstalled): for
# repeated local runs; CI sets neither, so each run starts from a fresh venv.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${1:-$REPO/.venv/bin/python}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/diffkit-wheel.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" DIFFKIT_QUIET=1
t0=$SECONDS

echo "== building the wheel (from a copy of the files git knows, so no stale build/ leaks in)"
mkdir "$WORK/src"
if [ "${WHEEL_FROM:-}" = HEAD ]; then
  git -C "$REPO" archive HEAD | tar -x -C "$WORK/src"
else
git -C "$REPO" ls-files -z --cached --others --exclude-standard | "$PY" -c '
import os, shutil, sys
src, dst = sys.argv[1], sys.argv[2]
for rel in sys.stdin.buffer.read().decode().split("\0"):
    a = os.path.join(src, rel)
    if rel and os.path.lexists(a):
        os.makedirs(os.path.dirname(os.path.join(dst, rel)) or dst, exist_ok=True)
        shutil.copy2(a, os.path.join(dst, rel), follow_symlinks=False)
' "$REPO" "$WORK/src"
fi
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$WORK/dist" "$WORK/src" > "$WORK/pip.log" 2>&1 || { grep -v '^WARNING: Location' "$WORK/pip.log" | tail -30; exit 1; }
WHEEL="$(ls "$WORK"/dist/diffkit-*.whl)"
"$PY" - "$WHEEL" <<'PY'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
need = ["diffkit/audits/tiny_default.toml", "diffkit/audits/bls_cps_2021_women_share.csv",
        "diffkit/tiny/weights/pipeline/model_index.json",
        "diffkit/tiny/weights/pipeline/unet/diffusion_pytorch_model.safetensors",
        "diffkit/tiny/weights/clip/open_clip_model.safetensors", "diffkit/py.typed"]
missing = [n for n in need if n not in names]
assert not missing, f"the wheel lacks {missing}"
print(f"   {sys.argv[1].rsplit('/', 1)[-1]}: {len(names)} files, package data present")
PY

echo "== installing it in a fresh venv (dependencies from the package index)"
VENV="${WHEEL_VENV:-$WORK/venv}"
if [ -x "$VENV/bin/python" ] && [ -n "${WHEEL_VENV:-}" ]; then
  echo "   reusing $VENV"
  "$VENV/bin/python" -m pip install --quiet --force-reinstall --no-deps "$WHEEL" > "$WORK/pip.log" 2>&1 || { grep -v '^WARNING: Location' "$WORK/pip.log" | tail -30; exit 1; }
else
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet "$WHEEL" > "$WORK/pip.log" 2>&1 || { grep -v '^WARNING: Location' "$WORK/pip.log" | tail -30; exit 1; }
fi
echo "   installed in $((SECONDS - t0)) s"

mkdir "$WORK/empty"
cd "$WORK/empty"
"$VENV/bin/python" - <<'PY'
import diffkit, pathlib
from diffkit.audit import bundled_specs, load_spec
here = pathlib.Path(diffkit.__file__).resolve()
assert "site-packages" in here.parts, f"diffkit was imported from {here}, not from the installed wheel"
assert {"tiny_default", "sd15_occupations"} <= set(bundled_specs()), bundled_specs()
assert load_spec("tiny_default").prompts.reference["nurse"] > 0.5
print(f"   diffkit {diffkit.__version__} from {here.parent}")
PY

echo "== diffkit speaks Spanish from the wheel's compiled catalogue"
help_es=$(DIFFKIT_LANG=es "$VENV/bin/diffkit" --help)
grep -q "^uso:" <<<"$help_es" || { echo "diffkit --help is not in Spanish:"; echo "$help_es" | head -5; exit 1; }

echo "== diffkit demo"
"$VENV/bin/diffkit" demo --out out/demo > demo.log 2>&1 || { tail -30 demo.log; exit 1; }
test -s out/demo/tiny_grid.png && test -s out/audit/tiny_default/report/index.html

echo "== a small diffkit audit run (own spec, bundled reference table)"
cat > small.toml <<'TOML'
[audit]
name = "wheel_small"
images_per_prompt = 2
batch_size = 4
[prompts]
templates = ["a photo of {a_occupation}"]
attributes.occupation = ["nurse", "pilot"]
reference = "bls_cps_2021_women_share.csv"
[controls]
templates = ["a {gender} {occupation}"]
images_per_prompt = 1
[pipeline]
model = "tiny"
steps = 4
[report]
n_boot = 50
TOML
"$VENV/bin/diffkit" audit run small.toml --no-progress > run.log 2>&1 || { tail -30 run.log; exit 1; }
test -s out/audit/wheel_small/report/index.html && test -s out/audit/wheel_small/report/images.csv
"$VENV/bin/diffkit" audit report out/audit/wheel_small --no-progress > report.log 2>&1 || { tail -30 report.log; exit 1; }

echo "== a bad input ends in one line and exit status 2"
set +e
"$VENV/bin/diffkit" audit run no_such_spec.toml > bad.log 2>&1
rc=$?
set -e
[ "$rc" = 2 ] && [ "$(wc -l < bad.log)" = 1 ] && grep -q "fix:" bad.log || { echo "rc=$rc"; cat bad.log; exit 1; }

echo "== wheel check passed in $((SECONDS - t0)) s"
