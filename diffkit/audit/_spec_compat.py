"""Stored specs across diffkit versions: the keys renamed and added since run folders began.

A run folder stores its resolved spec (``spec.json``, the ledger's ``meta``). Run folders written
before a key was renamed or added must keep their identity (:meth:`AuditSpec.fingerprint
<diffkit.audit.spec.AuditSpec.fingerprint>`) and still load (:func:`upgrade_spec_dict`). Pure
dict work: this module knows the spec only as JSON.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ADDED", "RENAMED", "canonical_form", "drop_absent", "upgrade_spec_dict"]

# Keys renamed since run folders began, per table: old name -> current name. A stored spec with
# the old names is read under the current ones (upgrade_spec_dict); the fingerprint writes the
# current names back under these first names, so it never changes with a rename. A TOML spec
# must use the current names. Add new renames here, never remove.
RENAMED: dict[str, dict[str, str]] = {
    "pipeline": {"guidance": "guidance_scale"},
    "report": {"random_state": "seed"},
}

# Keys added since run folders began, per table ("" is [audit]), with the value that means what a
# spec without the key meant. A stored spec lacks them; the canonical form (and so the fingerprint)
# leaves them out at that value, so adding a key never changes the fingerprint of a run folder
# written before it. Add new keys here, never remove.
ADDED: dict[str, dict[str, Any]] = {
    "": {
        "seeds": "derived",
        "noise": "per_image",
        "prompt_seeds": {},
        "sweep": {},
        "replication": {"published": "", "by": "", "counts": {}, "source": ""},
    },
    "prompts": {"language": "en"},
    "controls": {"language": "en"},
    "pipeline": {"generator_device": "cpu", "safety_checker": True},
    "classifier": {
        "kind": "open_clip",
        "gate": "clip",
        "detector": None,
        "detector_weights": None,
        "label_map": {},
        "crop_size": 224,
        "crop_margin": 0.25,
        "keep_first": None,
        "phrase_sets": [],
    },
}


def drop_absent(d: dict[str, Any]) -> dict[str, Any]:
    """*d* without the keys of :data:`ADDED` that hold their absent value."""
    out = dict(d)
    for table, keys in ADDED.items():
        sub = out if table == "" else out.get(table)
        if not isinstance(sub, dict):
            continue
        sub = dict(sub)
        for k, absent in keys.items():
            if k in sub and (sub[k] == absent or (isinstance(absent, list) and list(sub[k] or []) == absent)):
                del sub[k]
        if table == "":
            out = sub
        else:
            out[table] = sub
    return out


def canonical_form(d: dict[str, Any]) -> dict[str, Any]:
    """*d* (:meth:`AuditSpec.to_dict`) with every renamed key under its first name and every added
    key at its absent value left out (:data:`ADDED`)."""
    out = drop_absent(d)
    for table, renames in RENAMED.items():
        if isinstance(out.get(table), dict):
            sub = dict(out[table])
            for old, new in renames.items():
                if new in sub:
                    sub[old] = sub.pop(new)
            out[table] = sub
    return out


def upgrade_spec_dict(d: dict[str, Any]) -> dict[str, Any]:
    """A stored spec dict (``spec.json``, a ledger's ``meta``) with renamed keys under their current names.

    Run folders written before a rename hold the old keys; this reads them without a warning
    (a run folder's spec is not the user's to edit). A dict holding both names is returned as is
    (:func:`~diffkit.audit.spec.spec_from_dict` then refuses it).
    """
    if not isinstance(d, dict):
        return d
    out = drop_absent(d)  # keys added since, at their absent value: the same spec with or without them
    for table, renames in RENAMED.items():
        if isinstance(out.get(table), dict):
            sub = dict(out[table])
            for old, new in renames.items():
                if old in sub and new not in sub:
                    sub[new] = sub.pop(old)
            out[table] = sub
    return out
