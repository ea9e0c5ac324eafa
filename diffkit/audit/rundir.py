"""The run folder, in one place: its ledger, its spec, its files and who may write into it.

A run folder holds::

    spec.json        the resolved spec, a readable copy of the ledger's own
    ledger.sqlite    one row per image (SQLite, write-ahead log), and a ``meta`` table:
                     fingerprint (sha256 of the spec, stable across key renames), spec, weights, created_at, diffkit_version;
                     a ``safety`` table holds the pipeline's nsfw_content_detected flag per image where it gives one
                     (a side table: ledgers from before it open unchanged and read as "unknown")
    .diffkit.lock    held (``flock``) by the process that writes into the folder; it names that
                     process and what it does (``12345	scoring images	2026-…``)
    images/KKKK/IIII.png
    report/          index.html, summary.md, metadata.json, the CSVs

**One writer at a time.** Generating, scoring (which marks damaged PNGs in the ledger and fills
the embedding cache) and writing the report each hold the folder's lock (:func:`run_lock`);
``diffkit audit run`` holds it from generation to report. A second ``audit run``, ``audit
report`` or :func:`~diffkit.audit.score.score_images` on a folder in use is refused at once
with :class:`~diffkit.errors.RunBusyError`, naming the other process and what it is doing; it
never waits half-way, so nothing is generated twice and two report writers never interleave.
Reading a finished run (``audit compare`` of its report CSVs) takes no lock: every file is
replaced atomically.

The ledger is the source of truth, and it is input: run folders are passed between people.
Its rows are checked against the image grid the spec makes (:func:`check_ledger`) whenever
a run is reopened or scored: a row whose path, prompt, seed or batch was edited, or a row the
spec does not make, is refused naming the row (a path such as ``../../x.png`` never leads a
write outside the folder: :func:`inside` checks every path before use); a row deleted by hand
is restored as pending by ``audit run`` (a warning names it) and named by scoring.
``spec.json`` is checked against the ledger whenever a run is
reopened (an edited copy is refused, a deleted one restored), and the run's *weights* (a
sha256 of the pipeline's safetensors and configs, or the hub commit it resolved to) are
recorded beside the spec, so a resumed run never mixes two models.

Everything written into the folder goes through :func:`write_atomic`; a full disk becomes
:class:`DiskFullError` with nothing half-written left behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import DiskFullError, RunBusyError, RunFolderError
from ._ledger import Ledger, connect, journal_mode, verify_files
from ._run_files import (
    LEDGER_NAME,
    LOCK_NAME,
    SPEC_NAME,
    STATUSES,
    LedgerRepairedWarning,
    RunMismatchError,
    clean_orphans,
    inside,
    make_run_dir,
    now,
    read_verified,
    sha256_file,
    write_atomic,
)
from ._run_lock import run_lock
from ._weights import weights_identity
from .spec import AuditSpec, spec_from_dict, upgrade_spec_dict

__all__ = [
    "LEDGER_NAME",
    "LOCK_NAME",
    "SPEC_NAME",
    "STATUSES",
    "DiskFullError",
    "Ledger",
    "LedgerRepairedWarning",
    "RunBusyError",
    "RunFolderError",
    "RunMismatchError",
    "check_ledger",
    "clean_orphans",
    "connect",
    "expected_rows",
    "first_difference",
    "inside",
    "journal_mode",
    "load_run_spec",
    "make_run_dir",
    "now",
    "prepare_run",
    "read_verified",
    "record_weights",
    "run_lock",
    "sha256_file",
    "spec_json",
    "verify_files",
    "weights_identity",
    "write_atomic",
]


_GRID_COLUMNS = ("prompt", "seed", "path", "batch")


def expected_rows(spec: AuditSpec) -> pd.DataFrame:
    """The ledger rows *spec* makes: ``prompt_id, image_index, prompt, seed, path, batch``."""
    from .prompts import build_prompts, image_grid

    grid = image_grid(spec, build_prompts(spec))
    grid["batch"] = [j // spec.batch_size for j in range(len(grid))]
    return grid


def check_ledger(rows: pd.DataFrame, spec: AuditSpec, run_dir: str | Path) -> pd.DataFrame:
    """Check a run's ledger *rows* against the rows *spec* makes; return the expected rows missing from it.

    A row the spec does not make (added by hand) or one whose prompt, seed, path or batch
    differs from the spec's (edited by hand: a path outside the folder, another seed) raises
    :class:`RunMismatchError` naming the first such row and how many there are. Rows deleted by
    hand are returned for the caller to restore (``audit run``) or name (scoring).
    """
    run_dir = Path(run_dir)
    want = expected_rows(spec)
    key = ["prompt_id", "image_index"]
    have = rows[key + list(_GRID_COLUMNS)].copy()
    have[key] = have[key].astype("int64")
    # three plain merges, never an outer one: a row missing on one side would turn the other's
    # integers into floats (NaN), and every seed would then look edited
    added = have.merge(want[key], on=key, how="left", indicator=True)
    added = added[added["_merge"] == "left_only"]
    if len(added):
        k, i = (int(x) for x in added.iloc[0][key])
        raise RunMismatchError(
            f"{run_dir / LEDGER_NAME}: {len(added)} row(s) the spec does not make, e.g. (prompt {k}, image {i}) "
            f"{added.iloc[0]['path']!r}: the ledger was edited by hand; diffkit reports only the spec's own images; "
            "fix: delete those rows from the ledger's images table, or run the spec into a new --out folder"
        )
    both = have.merge(want, on=key, how="inner", suffixes=("", "_spec"))
    for col in _GRID_COLUMNS:
        diff = both[both[col].astype(str) != both[f"{col}_spec"].astype(str)]
        if len(diff):
            r = diff.iloc[0]
            k, i = int(r["prompt_id"]), int(r["image_index"])
            if col == "path":
                inside(run_dir, str(r["path"]), row=(k, i))  # the clearer message for a path that escapes
            raise RunMismatchError(
                f"{run_dir / LEDGER_NAME}: {len(diff)} row(s) whose {col} is not the spec's, e.g. (prompt {k}, "
                f"image {i}): {r[col]!r} where the spec makes {r[f'{col}_spec']!r}; the ledger was edited by hand; "
                "fix: restore that value, or run the spec into a new --out folder"
            )
    missing = want.merge(have[key], on=key, how="left", indicator=True)
    return missing[missing["_merge"] == "left_only"].drop(columns="_merge").reset_index(drop=True)


def spec_json(spec: AuditSpec) -> str:
    """``spec.json``'s text: the resolved spec, indented, keys sorted."""
    return json.dumps(spec.to_dict(), indent=2, sort_keys=True)


def first_difference(a: Any, b: Any, key: str = "") -> str:
    """The first key where two nested dicts differ, as ``"key: a there, b now"``."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return first_difference(a.get(k), b.get(k), f"{key}.{k}" if key else k)
    return f"{key or '(spec)'}: {a!r} there, {b!r} now"


def load_run_spec(run_dir: str | Path) -> AuditSpec:
    """The spec a run folder was made with: the ledger's own copy.

    ``spec.json`` is checked against it: a missing ``spec.json`` is restored, an edited one is
    refused (:class:`RunMismatchError` naming the first difference). A folder that is not a
    run raises :class:`RunFolderError`.
    """
    run_dir = Path(run_dir)
    sj = run_dir / SPEC_NAME
    if not (run_dir / LEDGER_NAME).is_file():
        what = f"has {SPEC_NAME} but no {LEDGER_NAME}" if sj.is_file() else f"has no {LEDGER_NAME}"
        raise RunFolderError(
            f"{run_dir} is not an audit run folder (it {what}); fix: pass the folder `diffkit audit run` wrote "
            "(e.g. out/audit/tiny_default), or run `diffkit audit run` first"
        )
    with Ledger(run_dir) as led:
        stored = led.meta("spec")
    if stored is None:
        raise RunFolderError(
            f"{run_dir / LEDGER_NAME} holds no spec (the run never started); fix: rerun `diffkit audit run` "
            "with this --out folder"
        )
    try:
        data = json.loads(stored)
        spec = spec_from_dict(data, source=str(sj))
    except (ValueError, KeyError, TypeError) as e:
        raise RunFolderError(
            f"{run_dir / LEDGER_NAME}: the stored spec is damaged ({type(e).__name__}: {e}); fix: rerun the audit "
            "into a new --out folder"
        ) from e
    if not sj.is_file():
        write_atomic(sj, spec_json(spec).encode())
        return spec
    try:
        on_disk = json.loads(sj.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise RunMismatchError(
            f"{sj} is not valid JSON ({e}); the run's spec is in its ledger; fix: delete {sj} "
            "(the next `diffkit audit report` restores it)"
        ) from None
    data, on_disk = upgrade_spec_dict(data), upgrade_spec_dict(on_disk)  # a folder from before a key rename
    if on_disk != data:
        raise RunMismatchError(
            f"{sj} differs from the spec this run was generated with ({first_difference(data, on_disk)}). "
            f"A report always uses the run's own spec; fix: delete {sj} (it is restored from the ledger), or "
            "run the edited spec into a new folder with `diffkit audit run SPEC --out NEW`"
        )
    return spec


def prepare_run(spec: AuditSpec, run_dir: str | Path, *, weights: str | None = None) -> Path:
    """Create (or reopen) a run folder for *spec*: write ``spec.json`` and the ledger's pending rows.

    Refuses (:class:`RunMismatchError`) a folder that holds another spec's run or a run of
    other *weights* (see :func:`weights_identity`), and files that are not a diffkit run.
    A run that never finished an image (a model that failed to load, a template that was
    too long) is started over with the new spec. Safe to call from several processes at once.
    """
    run_dir = make_run_dir(run_dir)
    fp = spec.fingerprint()
    if not (run_dir / LEDGER_NAME).exists():
        foreign = [p.name for p in run_dir.iterdir() if not p.name.startswith((LEDGER_NAME, LOCK_NAME))]
        if foreign:
            raise RunMismatchError(
                f"{run_dir} is not empty ({', '.join(sorted(foreign)[:3])}…) and holds no audit ledger; "
                "fix: choose an empty or new output folder (--out)"
            )
    grid = expected_rows(spec)
    restored = None
    with Ledger(run_dir) as led, led.transaction() as c:
        n_done = c.execute("SELECT COUNT(*) FROM images WHERE status = 'done'").fetchone()[0]
        fresh = _check_fingerprint(led, c, spec, run_dir, fp, n_done)
        _check_weights(led, c, spec, run_dir, weights, n_done)
        if fresh:
            _start_ledger(c, spec, fp, grid)
        else:  # a reopened run: its ledger is input (rows added, edited or deleted by hand)
            restored = check_ledger(led.frame(), spec, run_dir)
            if len(restored):
                c.executemany(
                    "INSERT INTO images (prompt_id, image_index, prompt, seed, path, batch) VALUES (?, ?, ?, ?, ?, ?)",
                    restored[["prompt_id", "image_index", "prompt", "seed", "path", "batch"]].itertuples(index=False),
                )
    if restored is not None and len(restored):
        import warnings

        k, i = int(restored.iloc[0]["prompt_id"]), int(restored.iloc[0]["image_index"])
        warnings.warn(
            LedgerRepairedWarning(
                f"{run_dir / LEDGER_NAME} lacked {len(restored)} row(s) the spec makes (deleted by hand?), e.g. (prompt "
                f"{k}, image {i}); they are restored as pending and will be generated"
            ),
            stacklevel=2,
        )
    _restore_spec_json(run_dir, spec)
    return run_dir


def _check_fingerprint(led: Ledger, c: Any, spec: AuditSpec, run_dir: Path, fp: str, n_done: int) -> bool:
    """Whether the ledger is fresh (no spec yet, or another spec's run that finished nothing: then
    emptied); another spec's run with finished images is refused."""
    old = led.meta("fingerprint")
    if old is not None and old != fp:
        if n_done:
            stored = upgrade_spec_dict(json.loads(led.meta("spec") or "{}"))
            diff = first_difference(stored, upgrade_spec_dict(spec.to_dict()))
            raise RunMismatchError(
                f"{run_dir} holds a run of another spec ({stored.get('name', '?')!r}; first difference: {diff}). "
                "diffkit never mixes runs: fix: pass a new --out folder, or delete this one to start over"
            )
        c.execute("DELETE FROM images")  # nothing was finished: start over with this spec
        c.execute("DELETE FROM meta")
        return True
    return old is None


def _check_weights(led: Ledger, c: Any, spec: AuditSpec, run_dir: Path, weights: str | None, n_done: int) -> None:
    """Record *weights*; other weights than the ledger's are refused once an image is finished."""
    old_weights = led.meta("weights")
    if weights is not None and old_weights is not None and old_weights != weights:
        if n_done:
            raise RunMismatchError(
                f"{run_dir} was generated with other weights of {spec.pipeline.model!r} ({old_weights} there, "
                f"{weights} now; the model changed since). diffkit never mixes models in one run: fix: pass a "
                "new --out folder, or restore the old weights (pin pipeline.revision for a hub model)"
            )
        c.execute("DELETE FROM meta WHERE key = 'weights'")
        old_weights = None
    if weights is not None and old_weights is None:
        c.execute("INSERT INTO meta (key, value) VALUES ('weights', ?)", (weights,))


def _start_ledger(c: Any, spec: AuditSpec, fp: str, grid: pd.DataFrame) -> None:
    """A fresh ledger's meta (fingerprint, spec, when, which diffkit) and its pending rows."""
    from .. import __version__

    c.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        [
            ("fingerprint", fp),
            ("spec", json.dumps(spec.to_dict(), sort_keys=True)),
            ("created_at", now()),
            ("diffkit_version", __version__),
        ],
    )
    # Fresh ledger: the rows are new (IGNORE only guards a second process racing here).
    c.executemany(
        "INSERT OR IGNORE INTO images (prompt_id, image_index, prompt, seed, path, batch) VALUES (?, ?, ?, ?, ?, ?)",
        grid[["prompt_id", "image_index", "prompt", "seed", "path", "batch"]].itertuples(index=False),
    )


def _restore_spec_json(run_dir: Path, spec: AuditSpec) -> None:
    """The ledger's spec (the fingerprints match) as ``spec.json``: restore a missing or edited copy."""
    text = spec_json(spec)
    try:
        current = (run_dir / SPEC_NAME).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        current = None
    if current != text:
        write_atomic(run_dir / SPEC_NAME, text.encode())


def record_weights(run_dir: str | Path, spec: AuditSpec, weights: str | None) -> None:
    """Check *weights* against the ledger's and record them when it has none (see :func:`prepare_run`)."""
    if weights is None:
        return
    with Ledger(run_dir) as led, led.transaction() as c:
        old = led.meta("weights")
        if old is None:
            c.execute("INSERT INTO meta (key, value) VALUES ('weights', ?)", (weights,))
        elif old != weights:
            n_done = c.execute("SELECT COUNT(*) FROM images WHERE status = 'done'").fetchone()[0]
            if n_done:
                raise RunMismatchError(
                    f"{run_dir} was generated with other weights of {spec.pipeline.model!r} ({old} there, "
                    f"{weights} now). diffkit never mixes models in one run: fix: pass a new --out folder, or pin "
                    "pipeline.revision to the old commit"
                )
            c.execute("UPDATE meta SET value = ? WHERE key = 'weights'", (weights,))
