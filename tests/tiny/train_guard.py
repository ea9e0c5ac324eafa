"""Bit-for-bit guard of diffkit-tiny's training stages (issue 24).

    python guard.py record CODE_DIR OUT.pt   # run every stage of tiny2 at toy size, save losses + tensors
    python guard.py check CODE_DIR REF.pt    # run again on CODE_DIR's code and torch.equal everything

CODE_DIR is put first on sys.path, so the same script drives the old and the new code.
"""

import os
import sys
import tempfile
from pathlib import Path

mode, code_dir, ref = sys.argv[1], sys.argv[2], Path(sys.argv[3])
sys.path.insert(0, code_dir)
os.environ["DIFFKIT_THREADS"] = "1"

import torch  # noqa: E402

import diffkit  # noqa: E402

assert diffkit.__file__.startswith(code_dir), diffkit.__file__
print("diffkit from", diffkit.__file__, flush=True)

LOSSES: list = []
_backward = torch.Tensor.backward


def _record_backward(self, *a, **k):
    LOSSES.append(self.detach().clone())
    return _backward(self, *a, **k)


torch.Tensor.backward = _record_backward

import diffkit.tiny.quality as Q  # noqa: E402

Q.quick_check = lambda pipe, **kw: {"n": 0}  # the export's image check: slow, and no weights

SIZES = dict(
    vae_steps=20,
    vae_batch=4,
    vae_ckpt=10,
    vae_eval=4,
    per_cell=2,
    pairs=20,
    unet_steps=20,
    unet_batch=8,
    ckpt=10,
    export_every=1000,
    eval_images=2,
    polish_steps=20,
    clip_steps=20,
    clip_batch=16,
    weak_steps=20,
)


def stages_old(run):
    """HEAD before issue 24: one Recipe with polish_* fields."""
    from dataclasses import replace

    from diffkit.tiny import clip as C
    from diffkit.tiny import train as T

    s = SIZES
    r = replace(
        T.TINY2,
        vae_steps=s["vae_steps"],
        vae_batch=s["vae_batch"],
        vae_checkpoint_every=s["vae_ckpt"],
        vae_eval_images=s["vae_eval"],
        cache_per_cell=s["per_cell"],
        cache_pairs=s["pairs"],
        unet_steps=s["unet_steps"],
        unet_batch=s["unet_batch"],
        checkpoint_every=s["ckpt"],
        export_every=s["export_every"],
        eval_images=s["eval_images"],
        polish_steps=s["polish_steps"],
        clip_steps=s["clip_steps"],
        clip_batch=s["clip_batch"],
        clip_weak_steps=s["weak_steps"],
    )
    T._setup(run)
    return {
        "vae": lambda: T.train_vae(r, run, resume=False),
        "cache": lambda: T.build_cache(r, run),
        "unet": lambda: T.train_unet(r, run, resume=False, minutes=None, stage="unet"),
        "polish": lambda: T.train_unet(r, run, resume=False, minutes=None, stage="polish"),
        "clip": lambda: C.train_clip(r, run, resume=False),
        "clip_weak": lambda: C.train_clip(r, run, resume=False, weak=True),
    }


def stages_new(run):
    """After issue 24: one frozen config per stage."""
    from dataclasses import replace

    from diffkit.tiny import recipe as R
    from diffkit.tiny import train as T

    s = SIZES
    t = R.TINY2
    r = replace(
        t,
        vae=replace(
            t.vae, steps=s["vae_steps"], batch=s["vae_batch"], checkpoint_every=s["vae_ckpt"], eval_images=s["vae_eval"]
        ),
        cache=replace(t.cache, per_cell=s["per_cell"], pairs=s["pairs"]),
        unet=replace(
            t.unet,
            steps=s["unet_steps"],
            batch=s["unet_batch"],
            checkpoint_every=s["ckpt"],
            export_every=s["export_every"],
            eval_images=s["eval_images"],
        ),
        polish=replace(
            t.polish,
            steps=s["polish_steps"],
            batch=s["unet_batch"],
            checkpoint_every=s["ckpt"],
            export_every=s["export_every"],
            eval_images=s["eval_images"],
        ),
        clip=replace(t.clip, steps=s["clip_steps"], batch=s["clip_batch"]),
        clip_weak=replace(t.clip_weak, steps=s["weak_steps"], batch=s["clip_batch"]),
    )
    T.setup_run(run)
    from diffkit.tiny import clip as C

    # the weak judge's image tower changed after the rewrite (issue 23: 3 × 3 pixels, not 8 × 8); the
    # guard checks the training code, so it trains the tower the reference trained
    C.WEAK_MODEL_CONFIG["vision_cfg"] = {**C.WEAK_MODEL_CONFIG["vision_cfg"], "image_size": 8, "patch_size": 2}
    return {
        name: (lambda name=name: T.run_stage(name, r, run, resume=False))
        for name in ("vae", "cache", "unet", "polish", "clip", "clip_weak")
    }


def flat(obj, prefix, out):
    """Every tensor (and number) in a checkpoint, by path; EMA wrappers' "module." prefixes dropped."""
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            flat(v, f"{prefix}/{k}".replace("/module.", "/"), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            flat(v, f"{prefix}/{i}", out)
    elif isinstance(obj, float | int) and not isinstance(obj, bool):
        out[prefix] = torch.tensor(obj, dtype=torch.float64)


def files(run, names):
    from safetensors.torch import load_file

    out = {}
    for n in names:
        p = run / n
        if p.suffix == ".safetensors":
            for k, v in load_file(str(p)).items():
                out[f"{n}:{k}"] = v
        else:
            st = torch.load(p, weights_only=False)
            if isinstance(st, torch.Tensor):
                st = {"masks": st}
            if "ema_unet" not in st and "ema" in st:  # the new layout: one AveragedModel of both
                for part in ("unet", "te"):
                    pre = f"module.{part}."
                    st[f"ema_{part}"] = {k[len(pre) :]: v for k, v in st["ema"].items() if k.startswith(pre)}
            keep = {
                k: st[k]
                for k in ("unet", "te", "ema_unet", "ema_te", "latents", "masks", "scaling_factor", "step")
                if k in st
            }
            if "opt" in st:
                keep["opt_state"] = st["opt"]["state"]
            flat(keep, n, out)
    return {k: v for k, v in out.items() if not k.endswith("/n_averaged")}


OUTPUTS = {
    "vae": ["vae/diffusion_pytorch_model.safetensors"],
    "cache": ["latents.pt", "vae/diffusion_pytorch_model.safetensors"],
    "unet": [
        "unet_ckpt.pt",
        "pipeline/unet/diffusion_pytorch_model.safetensors",
        "pipeline/text_encoder/model.safetensors",
    ],
    "polish": [
        "polish_ckpt.pt",
        "object_masks.pt",
        "pipeline/unet/diffusion_pytorch_model.safetensors",
        "pipeline/text_encoder/model.safetensors",
    ],
    "clip": ["clip/open_clip_model.safetensors"],
    "clip_weak": ["clip-weak/open_clip_model.safetensors"],
}


def main():
    import time

    run = Path(tempfile.mkdtemp(prefix="guard_run_"))
    try:
        import diffkit.tiny.recipe  # noqa: F401

        stages = stages_new(run)
        api = "new"
    except ImportError:
        stages = stages_old(run)
        api = "old"
    torch.set_num_threads(1)
    print("api", api, "run", run, flush=True)
    record = {}
    only = os.environ.get("GUARD_STAGES")
    for name, fn in stages.items():
        if only and name not in only.split(","):
            continue
        LOSSES.clear()
        t0 = time.time()
        fn()
        torch.set_num_threads(1)
        record[name] = {
            "losses": torch.stack(LOSSES) if LOSSES else torch.zeros(0),
            "tensors": files(run, OUTPUTS[name]),
        }
        print(
            f"{name}: {len(LOSSES)} losses, {len(record[name]['tensors'])} tensors, {time.time() - t0:.0f} s",
            flush=True,
        )
    if mode == "record":
        torch.save(record, ref)
        print("recorded", ref)
        return
    want = torch.load(ref, weights_only=False)
    bad = 0
    for name, got in record.items():
        w = want[name]
        ok_l = w["losses"].shape == got["losses"].shape and torch.equal(w["losses"], got["losses"])
        missing = sorted(set(w["tensors"]) ^ set(got["tensors"]))
        diff = [
            k
            for k in w["tensors"]
            if k in got["tensors"]
            and not (
                w["tensors"][k].dtype == got["tensors"][k].dtype and torch.equal(w["tensors"][k], got["tensors"][k])
            )
        ]
        n = len(w["tensors"])
        print(
            f"{name}: losses {'EQUAL' if ok_l else 'DIFFER'} ({len(w['losses'])}), "
            f"tensors {n - len(diff)}/{n} equal, keys missing/extra {len(missing)}"
        )
        for k in (diff + missing)[:10]:
            print("   ", k)
        bad += (not ok_l) + len(diff) + len(missing)
    print("GUARD", "PASS" if bad == 0 else "FAIL")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
