"""A tiny open_clip model with random weights, for tests and benchmarks (no downloads).

Saved as an open_clip ``local-dir:`` folder (``open_clip_config.json`` +
``open_clip_model.safetensors``), so a spec names it as ``classifier.model =
"local-dir:/path"`` and the audit loads it through ``open_clip.create_model_and_transforms``
exactly as it loads a hub model, in any process.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["TEST_CLIP_CONFIG", "pictogram_figures", "save_test_clip", "tiny_clip_gender_head", "to_toml"]

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


# ----------------------------------------------------------------------------- labeller stand-ins
# Offline stand-ins for a face detector and a FairFace-style classifier, so that the face-crop
# labeller and the face-count gate run end to end in tests (and in the docs' examples) on the
# pictogram world. Spec names: "diffkit.audit._testing:pictogram_figures" and
# "diffkit.audit._testing:tiny_clip_gender_head" (label_map = { female = 0, male = 1 }).


def pictogram_figures(weights: str | None = None):
    """A figure detector for the pictogram world, in a face detector's place: the pixel oracle's
    separate figures (:func:`diffkit.tiny.oracle.figure_boxes`: dark silhouettes at least a quarter of
    the image tall, a head joined to its body, two figures standing close kept apart). Returns
    ``detect(image) -> [(x0, y0, x1, y1), …]``."""
    from ..tiny.oracle import figure_boxes

    return figure_boxes


def tiny_clip_gender_head(weights: str | None = None):
    """A FairFace-style stand-in: diffkit-tiny CLIP's image tower with a fixed two-way head (the
    text embeddings of "a photo of a woman" and "a photo of a man"), as a ``torch.nn.Module`` taking
    ``(N, 3, S, S)`` crops normalised with its ``mean``/``std`` (CLIP's). Outputs: 0 female, 1 male."""
    import torch
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    from ..tiny import load_clip

    model, _, tokenizer = load_clip()

    class TinyClipGenderHead(torch.nn.Module):
        mean = OPENAI_DATASET_MEAN
        std = OPENAI_DATASET_STD

        def __init__(self):
            super().__init__()
            self.visual = model.visual
            with torch.no_grad():
                text = model.encode_text(tokenizer(["a photo of a woman", "a photo of a man"]), normalize=True)
                scale = model.logit_scale.exp()
            self.register_buffer("text", text.float())
            self.register_buffer("scale", scale.float().reshape(()))

        def forward(self, x):
            size = self.visual.image_size
            size = size[0] if isinstance(size, (tuple, list)) else size
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            f = torch.nn.functional.normalize(self.visual(x), dim=-1)
            return self.scale * f @ self.text.t()

    return TinyClipGenderHead().eval()
