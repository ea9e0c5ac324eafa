"""A tiny open_clip model with random weights, for tests and benchmarks (no downloads).

Saved as an open_clip ``local-dir:`` folder (``open_clip_config.json`` +
``open_clip_model.safetensors``), so a spec names it as ``classifier.model =
"local-dir:/path"`` and the audit loads it through ``open_clip.create_model_and_transforms``
exactly as it loads a hub model, in any process.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["TEST_CLIP_CONFIG", "save_test_clip", "to_toml"]

TEST_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def save_test_clip(folder: str | Path, *, seed: int = 0, config: dict | None = None) -> str:
    """Build a random open_clip model (seeded) into *folder*; return its ``"local-dir:…"`` name."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"model_cfg": config or TEST_CLIP_CONFIG, "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    with torch.random.fork_rng(devices=[]):  # seeded, and the caller's random stream left as it was
        torch.manual_seed(seed)
        model = open_clip.CLIP(**(config or TEST_CLIP_CONFIG))  # what create_model builds, without its "no weights" log
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return f"local-dir:{folder}"


def to_toml(d: dict) -> str:
    """A tiny TOML writer for spec dicts (str, int, float, lists of str, nested tables)."""
    import json

    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        raise TypeError(v)

    lines: list[str] = []

    def table(name, t):
        lines.append(f"[{name}]")
        subs = []
        for k, v in t.items():
            if isinstance(v, dict):
                subs.append((f"{name}.{k}", v))
            else:
                lines.append(f"{k} = {val(v)}")
        lines.append("")
        for n, s in subs:
            table(n, s)

    for name, t in d.items():
        table(name, t)
    return "\n".join(lines)
