"""What pins a run's weights: a digest of a local pipeline's files, or the hub commit it resolves to."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ._run_files import sha256_file

__all__ = ["weights_identity"]

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def _hash_cached(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = sha256_file(path) or "unreadable"
    return _HASH_CACHE[key]


def _folder_digest(folder: Path) -> str:
    """sha256 over (relative path, sha256) of every safetensors and JSON file under *folder*."""
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".json"))
    for p in files:
        h.update(f"{p.relative_to(folder).as_posix()}\0{_hash_cached(p)}\n".encode())
    return h.hexdigest()


def _hub_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit *revision* of *repo_id* resolves to in the local Hugging Face cache, if cached."""
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "model_index.json", revision=revision or "main")
    except Exception:  # noqa: BLE001 - an id the hub library rejects is simply not cached
        return None
    if isinstance(hit, str):
        return Path(hit).parent.name  # …/snapshots/<commit>/model_index.json
    return None


def weights_identity(model: str, revision: str | None = None) -> str | None:
    """What pins the weights of *model*: a digest of its files, or the hub commit it resolves to.

    ``"tiny"`` and local folders give ``"sha256:<digest of the safetensors and JSON files>"``; a
    hub id gives ``"<id>@<commit>"`` from the local cache, or ``None`` when it is not cached yet.
    """
    if str(model) == "tiny":
        from ..tiny import pipeline_path

        return "sha256:" + _folder_digest(pipeline_path(verify=False))
    p = Path(str(model)).expanduser()
    if p.is_dir():
        return "sha256:" + _folder_digest(p)
    commit = _hub_commit(str(model), revision)
    return f"{model}@{commit}" if commit else None
