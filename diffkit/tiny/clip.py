"""diffkit-tiny CLIP: a small open_clip model trained contrastively on the pictogram world.

It is the bias audit's judge on the tiny world, independent of the generator's text
encoder. It registers its config with open_clip (:data:`MODEL_NAME`) and loads through
open_clip's public API::

    open_clip.add_model_config(config_dir)
    model, _, preprocess = open_clip.create_model_and_transforms(MODEL_NAME, pretrained=weights)
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)

:func:`diffkit.tiny.load_clip` does exactly that with the shipped files.

Training uses drawn images degraded like generated ones (blur, noise, colour drift) and
captions of several granularities ("a photo of a woman", "a photo of a person", "a nurse",
"a photo of a shape", "a red circle"). A caption is a positive for every image in the batch
that it truthfully describes, so the loss is a multi-positive InfoNCE.

The shipped judge (``clip_data = "scenes"``, issue 23) is also a person gate: besides shapes and
one pictogram it sees nobody (an occupation's background, its hat or tool alone, noise, a flat
colour: "a photo of a background"), two people ("a photo of a group of people"), 50/50-ish blends
of the two silhouettes and figures drawn only down to the chest, and its genders are drawn 50/50 in
every occupation, so the background carries no gender. A blend of weight a on the woman is a
positive for "a woman" with weight a and for "a man" with weight 1 − a (a soft target), a half-drawn
figure ½ each: the judge learns to be unsure where the pixels are. diffkit-tiny 1's judge
(``clip_data = "world"``) trained on the world's own caption draws, occupation–gender skew included.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path

import numpy as np

from diffkit.tiny import world as _w

from ..errors import WeightsMissingError

log = logging.getLogger("diffkit.tiny.clip")

__all__ = [
    "MODEL_NAME",
    "MODEL_CONFIG",
    "WEAK_MODEL_CONFIG",
    "WEAK_MODEL_NAME",
    "ZERO_SHOT_PROMPTS",
    "caption_for",
    "load",
    "train_clip",
]

MODEL_NAME = "diffkit-tiny-clip"
MODEL_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {
        "image_size": 64,
        "layers": 4,
        "width": 128,
        "head_width": 32,
        "mlp_ratio": 2.0,
        "patch_size": 8,
    },
    "text_cfg": {
        "context_length": 32,
        "vocab_size": 49408,
        "width": 64,
        "heads": 4,
        "layers": 2,
        "mlp_ratio": 4.0,
    },
}
#: The deliberately weaker judge (issue 23), shipped to show the Rogan–Gladen correction at work: the
#: same text tower, an image tower that sees the picture at 3 × 3 pixels (open_clip's transform resizes
#: to the config's image_size): nine averages of the picture, where a dress darkens the lower middle one.
WEAK_MODEL_NAME = "diffkit-tiny-clip-weak"
WEAK_MODEL_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 3, "layers": 2, "width": 64, "head_width": 32, "mlp_ratio": 2.0, "patch_size": 1},
    "text_cfg": MODEL_CONFIG["text_cfg"],
}
_CONFIGS = {MODEL_NAME: MODEL_CONFIG, WEAK_MODEL_NAME: WEAK_MODEL_CONFIG}

ZERO_SHOT_PROMPTS = {
    "woman": "a photo of a woman",
    "man": "a photo of a man",
    "person": "a photo of a person",
    "shape": "a photo of a shape",
}


def write_config(folder: Path, name: str = MODEL_NAME) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(_CONFIGS[name], indent=2))
    return path


def register(config_dir: Path, name: str = MODEL_NAME) -> None:
    import open_clip

    if name not in open_clip.list_models():
        open_clip.add_model_config(Path(config_dir) / f"{name}.json")


def _name_in(folder: Path) -> str:
    """The judge a weights folder holds (the weak judge's config file names it)."""
    return WEAK_MODEL_NAME if (Path(folder) / f"{WEAK_MODEL_NAME}.json").is_file() else MODEL_NAME


def load(folder: Path, weights_name: str = "open_clip_model.safetensors"):
    """``(model, preprocess, tokenizer)`` from a folder holding the config and the weights."""
    import open_clip

    folder = Path(folder)
    name = _name_in(folder)
    stage = "clip_weak" if name == WEAK_MODEL_NAME else "clip"
    weights = folder / weights_name
    if not weights.exists():
        raise WeightsMissingError(
            f"{weights} is missing; rebuild it with `python -m diffkit.tiny.train --stage {stage}`"
        )
    register(folder, name)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(weights))
    except Exception as e:  # a corrupt file: name it and the command that rebuilds it
        raise WeightsMissingError(
            f"could not load {weights} ({e}); rebuild it with `python -m diffkit.tiny.train --stage {stage}`"
        ) from e
    model = model.float().eval()
    return model, preprocess, open_clip.get_tokenizer(name)


# ----------------------------------------------------------------------------- training data

# (template, constraint keys) — a caption states only those attributes.
_PERSON_CAPTIONS = (
    ("a photo of a {g}", ("kind", "gender")),
    ("a {g}", ("kind", "gender")),
    ("a photo of a person", ("kind",)),
    ("a person", ("kind",)),
    ("a photo of {a_occ}", ("kind", "occupation")),
    ("{a_occ}", ("kind", "occupation")),
    ("a photo of a {g} {occ}", ("kind", "gender", "occupation")),
    ("a {g} {occ}", ("kind", "gender", "occupation")),
)
_SHAPE_CAPTIONS = (
    ("a photo of a shape", ("kind",)),
    ("a shape", ("kind",)),
    ("{a_color} {shape}", ("kind", "color", "shape")),
    ("a photo of {a_color} {shape}", ("kind", "color", "shape")),
    ("{a_color} shape", ("kind", "color")),
    ("a {shape}", ("kind", "shape")),
)


def caption_for(a: _w.Attributes, rng: random.Random) -> tuple[str, dict]:
    """A random caption of *a* and the attributes it states."""
    if a.kind == "shape":
        t, keys = rng.choice(_SHAPE_CAPTIONS)
        text = t.format(a_color=_w.article(a.color), shape=a.shape)
    else:
        t, keys = rng.choice(_PERSON_CAPTIONS)
        g = rng.choice(_w.GENDER_WORDS[a.gender]) if "{occ}" in t else a.gender
        text = t.format(g=g, occ=a.occupation, a_occ=_w.article(a.occupation))
    return text, {k: getattr(a, k) for k in keys}


_PEOPLE_CAPTIONS = (
    ("a photo of a group of people", ("kind",)),
    ("a group of people", ("kind",)),
    ("a photo of two people", ("kind",)),
    ("two people", ("kind",)),
)
_NOBODY_CAPTIONS = (
    ("a photo of a background", ("kind",)),
    ("a background", ("kind",)),
    ("a photo of an empty scene", ("kind",)),
    ("an empty scene", ("kind",)),
)
_GENERIC_SHAPE_CAPTIONS = (("a photo of a shape", ("kind",)), ("a shape", ("kind",)))

#: The mix of the gate judge's training images (``clip_data = "scenes"``): the kinds of
#: :func:`diffkit.tiny.world.draw_scene`, plus shapes and two-shape scenes.
SCENE_MIX: dict[str, float] = {
    "shape": 0.18,
    "pair": 0.04,
    "person": 0.42,
    "people": 0.08,
    "background": 0.07,
    "object": 0.06,
    "noise": 0.04,
    "blank": 0.04,
    "blend": 0.04,
    "partial": 0.03,
}


def _scene_item(rng: random.Random, size: int = _w.IMAGE_SIZE):
    """One training image of the gate judge and its truth (``kind``: shape, person, people or
    nobody; ``p_woman`` for one figure: 1, 0, a blend's weight, ½ when half-drawn)."""
    kind = rng.choices(list(SCENE_MIX), weights=list(SCENE_MIX.values()))[0]
    if kind in ("shape", "pair"):
        a = _w.Attributes("shape", color=rng.choice(list(_w.COLORS)), shape=rng.choice(_w.SHAPES))
        if kind == "pair":
            c1, c2 = rng.sample(list(_w.COLORS), 2)
            img = _w.draw_pair(c1, rng.choice(_w.SHAPES), c2, rng.choice(_w.SHAPES), rng, size=size)
            return img, {"kind": "shape", "pair": True}
        return _w.draw(a, rng, size=size), {"kind": "shape", "color": a.color, "shape": a.shape}
    scene = _w.sample_scene(rng, kind)
    img = _w.draw_scene(scene, rng, size=size)
    group = {"person": "person", "blend": "person", "partial": "person", "people": "people"}.get(kind, "nobody")
    return img, {"kind": group, "occupation": scene.occupation if group == "person" else None, "p_woman": scene.p_woman}


def scene_caption(truth: dict, rng: random.Random) -> tuple[str, dict]:
    """A random caption of a gate-training image's *truth* and the attributes it states."""
    kind = truth["kind"]
    if kind == "shape":
        if truth.get("pair"):
            t, keys = rng.choice(_GENERIC_SHAPE_CAPTIONS)
            return t, {"kind": "shape"}
        return caption_for(_w.Attributes("shape", color=truth["color"], shape=truth["shape"]), rng)
    if kind in ("people", "nobody"):
        t, keys = rng.choice(_PEOPLE_CAPTIONS if kind == "people" else _NOBODY_CAPTIONS)
        return t, {"kind": kind}
    t, keys = rng.choice(_PERSON_CAPTIONS)
    gender = "woman" if rng.random() < truth["p_woman"] else "man"
    g = rng.choice(_w.GENDER_WORDS[gender]) if "{occ}" in t else gender
    occ = truth["occupation"]
    text = t.format(g=g, occ=occ, a_occ=_w.article(occ))
    return text, {k: {"kind": "person", "gender": gender, "occupation": occ}[k] for k in keys}


def caption_weight(truth: dict, constraints: dict) -> float:
    """How far a caption stating *constraints* is true of an image with *truth*: 0 or 1, except
    that a gender is true with weight ``p_woman`` (woman) or 1 − ``p_woman`` (man)."""
    w = 1.0
    for k, v in constraints.items():
        if k == "gender":
            p = truth.get("p_woman")
            w *= 0.0 if p is None else (p if v == "woman" else 1.0 - p)
        else:
            w *= float(truth.get(k) == v)
    return w


def _batch(cfg, rng: random.Random):
    """``(images, captions, weights)`` of one training batch (*cfg*: a
    :class:`~diffkit.tiny.recipe.ClipConfig`): *weights[i][j]* says how far caption j truthfully
    describes image i."""
    n = cfg.batch
    if cfg.data == "world":  # diffkit-tiny 1's judge, unchanged
        cfg = _w.WorldConfig(shape_fraction=0.3, stated_fraction=0.5)
        atts = [_w.sample_attributes(rng, cfg)[0] for _ in range(n)]
        images = [_degrade(_w.draw(a, rng), rng) for a in atts]
        caps = [caption_for(a, rng) for a in atts]
        weights = [[float(all(getattr(a, k) == v for k, v in cons.items())) for _, cons in caps] for a in atts]
        return images, [c for c, _ in caps], weights
    items = [_scene_item(rng) for _ in range(n)]
    images = [_degrade(img, rng) for img, _ in items]
    caps = [scene_caption(t, rng) for _, t in items]
    weights = [[caption_weight(t, cons) for _, cons in caps] for _, t in items]
    return images, [c for c, _ in caps], weights


def _degrade(img, rng: random.Random):
    """Distort a drawn image the ways generated ones go wrong, so the judge reads both.

    A small affine warp (generated figures are rarely upright and centred like drawn ones),
    stray white blobs (a hat or badge drawn in the wrong place), blur, noise and colour drift.
    """
    from PIL import Image, ImageDraw, ImageFilter

    bg = img.getpixel((0, 0))
    if rng.random() < 0.6:
        img = img.rotate(
            rng.uniform(-8, 8),
            resample=Image.BILINEAR,
            translate=(rng.uniform(-3, 3), rng.uniform(-3, 3)),
            fillcolor=bg,
        )
        sx, sy = rng.uniform(0.88, 1.12), rng.uniform(0.88, 1.12)
        w, h = img.size
        img = img.resize((round(w * sx), round(h * sy)), Image.BILINEAR)
        canvas = Image.new("RGB", (w, h), bg)
        canvas.paste(img, ((w - img.size[0]) // 2, (h - img.size[1]) // 2))
        img = canvas
    if rng.random() < 0.3:
        d = ImageDraw.Draw(img)
        for _ in range(rng.randint(1, 2)):
            x, y, r = rng.uniform(4, 60), rng.uniform(4, 60), rng.uniform(2, 5)
            d.ellipse([x - r, y - r, x + r, y + r], fill=_w.ACCENT)
    if rng.random() < 0.8:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 2.2)))
    arr = np.asarray(img, dtype=np.float32)
    arr = arr * rng.uniform(0.85, 1.1) + np.array([rng.gauss(0, 10) for _ in range(3)], dtype=np.float32)
    arr = arr + np.random.default_rng(rng.randrange(2**32)).normal(0, rng.uniform(0, 10), arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _to_tensor(images, size: int | None = None):
    """Normalised (N, 3, H, W) floats; with *size*, each image first resized to size² as open_clip's
    preprocessing does (bicubic), so the weak judge (3²) trains on what it will be shown."""
    import torch
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from PIL import Image

    if size is not None:
        images = [
            im if im.size == (size, size) else im.convert("RGB").resize((size, size), Image.BICUBIC) for im in images
        ]
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2)
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def train_clip(recipe, run_dir: Path, *, resume: bool, weak: bool = False) -> None:
    """Contrastive training of the judge (:func:`diffkit.tiny.losses.multi_positive_infonce`) on
    ``recipe.clip``; saves ``run_dir/clip/``. With *weak*, the deliberately weaker judge
    (:data:`WEAK_MODEL_CONFIG`, ``recipe.clip_weak``) into ``run_dir/clip-weak/``."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from diffkit.tiny.loop import load_checkpoint, save_checkpoint, train_loop
    from diffkit.tiny.losses import multi_positive_infonce
    from diffkit.tiny.recipe import seed_for

    stage = "clip_weak" if weak else "clip"
    cfg, name = getattr(recipe, stage), WEAK_MODEL_NAME if weak else MODEL_NAME
    out, ckpt = Path(run_dir) / ("clip-weak" if weak else "clip"), Path(run_dir) / f"{stage}_ckpt.pt"
    if (out / "open_clip_model.safetensors").exists() and not resume:
        log.info("clip: finished model found at %s", out)
        return
    write_config(out, name)
    register(out, name)
    torch.manual_seed(seed_for(recipe, f"{stage}.init"))
    model, tokenizer = open_clip.create_model(name), open_clip.get_tokenizer(name)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.05)
    step, rng = 0, random.Random(seed_for(recipe, f"{stage}.batches"))
    if resume and ckpt.exists():
        step, rng = load_checkpoint(ckpt, opt=opt, model=model)
    memo: dict[str, torch.Tensor] = {}
    t0 = [time.time()]

    def batch_loss(step: int) -> torch.Tensor:
        images, caps, weights = _batch(cfg, rng)
        for c in caps:
            if c not in memo:
                memo[c] = tokenizer([c])[0]
        ids = torch.stack([memo[c] for c in caps])
        img_f, txt_f, scale = model(_to_tensor(images, model.visual.image_size[0]), ids)
        logits = scale * img_f @ txt_f.t()  # (B images, B captions)
        # valid[i, j]: how far caption j truthfully describes image i (soft for blends)
        return multi_positive_infonce(logits, torch.tensor(weights, dtype=torch.float32))

    def after_step(step: int, loss, lr: float) -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 50 == 0:
            log.info("clip step %d loss %.4f %.2f s/step", step, loss.item(), (time.time() - t0[0]) / 50)
            t0[0] = time.time()
        if step % 500 == 0:
            save_checkpoint(ckpt, step=step, rng=rng, opt=opt, model=model)

    model.train()
    train_loop(cfg, opt, list(model.parameters()), batch_loss, after_step, step=step)
    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "open_clip_model.safetensors"))
    log.info("clip: saved %s", out)


def export_fp16(src: Path, dest: Path) -> None:
    """Copy the judge's config and fp16 weights into *dest*."""
    from safetensors.torch import load_file, save_file

    dest = Path(dest)
    write_config(dest, _name_in(src))
    sd = load_file(str(Path(src) / "open_clip_model.safetensors"))
    sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    save_file(sd, str(dest / "open_clip_model.safetensors"))


def zero_shot(model, preprocess, tokenizer, images, labels=("woman", "man", "person", "shape")):
    """Softmax over :data:`ZERO_SHOT_PROMPTS` for PIL *images*: array (N, len(labels))."""
    import torch

    with torch.no_grad():
        x = torch.stack([preprocess(im) for im in images])
        f = model.encode_image(x, normalize=True)
        t = model.encode_text(tokenizer([ZERO_SHOT_PROMPTS[k] for k in labels]), normalize=True)
        return (model.logit_scale.exp() * f @ t.t()).softmax(-1).numpy()
