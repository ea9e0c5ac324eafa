"""Audit benchmarks, as ratios measured in one run on one machine.

1. End to end (generate → score → metrics) against a hand-written loop that calls the same
   pipeline and the same open_clip model with the same batch size and saves the same PNGs.
   Target: ≥ 0.95×.
2. Scoring alone (:func:`diffkit.audit.score_images`, cold cache) against raw open_clip
   (PIL open → preprocess → encode_image → softmax) on the same files. Target: ≥ 0.95×.
3. Peak memory (max RSS of a fresh process running the whole audit with its report) for a
   small and a 10× larger run of the same spec. Target: within 10%.
4. The 2-process sharded run (``accelerate launch``) against one process.

Everything runs on tiny random models (no downloads): a diffusers SD pipeline from
``diffkit.testing`` and an open_clip ViT with random weights. Timings interleave the two
contenders and keep each one's best of ``--repeats`` runs, which is robust to a busy machine.

    python benchmarks/bench_audit.py            # full sizes (200 vs 2,000 images for memory)
    python benchmarks/bench_audit.py --quick    # scaled down: 32×32 images, 5 steps, memory at
                                                # 100 vs 1,000 images (about 10 minutes on 2 busy cores)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BENCH_CLIP = {  # a ViT-S/32-sized CLIP: big enough that scoring is model-bound, as with real judges
    "embed_dim": 256,
    "vision_cfg": {"image_size": 224, "layers": 6, "width": 384, "patch_size": 32, "head_width": 64},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 256, "heads": 4, "layers": 4},
}


def _spec(
    pipe_dir: Path, clip: str, *, occupations: list[str], n: int, batch: int, steps: int, size: int, controls: int = 2
) -> dict:
    return {
        "audit": {"name": "bench", "seed": 0, "images_per_prompt": n, "batch_size": batch},
        "prompts": {
            "templates": ["a photo of {a_occupation}"],
            "attributes": {"occupation": occupations},
            "reference": str(REPO / "audits" / "bls_cps_2021_women_share.csv"),
        },
        "controls": {"templates": ["a {gender} {occupation}"], "images_per_prompt": controls},
        "pipeline": {"model": str(pipe_dir), "steps": steps, "height": size, "width": size, "guidance_scale": 5.0},
        "classifier": {"model": clip, "person_threshold": 0.0, "abstain_below": 0.5, "batch_size": batch},
        "report": {"n_boot": 200, "thumbnails_per_prompt": 4},
    }


def _toml(d: dict) -> str:
    from diffkit.audit._testing import to_toml

    return to_toml(d)


def hand_loop(spec, pipe, clip, out: Path) -> float:
    """What a careful user would write: the same calls, no ledger, no cache, no checks."""
    import numpy as np
    import torch

    from diffkit.audit import build_prompts, derive_seed

    t0 = time.perf_counter()
    prompts = build_prompts(spec)
    jobs = [
        (int(k), i, p)
        for k, p, n in zip(prompts["prompt_id"], prompts["prompt"], prompts["n_images"])
        for i in range(int(n))
    ]
    bs = spec.batch_size
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for j in range(0, len(jobs), bs):
        chunk = jobs[j : j + bs]
        gens = [torch.Generator("cpu").manual_seed(derive_seed(spec.seed, k, i)) for k, i, _ in chunk]
        with torch.inference_mode():
            images = pipe(
                prompt=[p for _, _, p in chunk],
                num_inference_steps=spec.pipeline.steps,
                guidance_scale=spec.pipeline.guidance_scale,
                height=spec.pipeline.height,
                width=spec.pipeline.width,
                generator=gens,
                output_type="pil",
            ).images
        for (k, i, _), im in zip(chunk, images):
            p = out / f"{k:04d}_{i:04d}.png"
            im.save(p)
            paths.append(p)
    scores = raw_open_clip(clip, paths, bs)
    labels = np.where(scores >= 0.5, "female", "male")
    _ = (labels == "female").mean()
    return time.perf_counter() - t0


def raw_open_clip(clip, paths, bs: int):
    """Raw open_clip zero-shot over files: the baseline for scoring."""
    import numpy as np
    import torch
    from PIL import Image

    model, preprocess, weights, scale = clip
    out = []
    for j in range(0, len(paths), bs):
        x = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths[j : j + bs]])
        with torch.inference_mode():
            e = model.encode_image(x, normalize=True)
            logits = scale * e @ weights
        out.append(torch.softmax(logits[:, :2], dim=1)[:, 0].numpy())
    return np.concatenate(out)


def bench_throughput(tmp: Path, pipe_dir: Path, clip_name: str, repeats: int, quick: bool) -> dict:
    import numpy as np
    import open_clip
    import torch

    from diffkit import load_pipeline
    from diffkit.audit import (
        ZeroShotClassifier,
        audit_metrics,
        generate_images,
        parse_spec,
        score_images,
    )
    from diffkit.audit.generate import DistState

    occ = ["nurse", "pilot", "CEO", "teacher"]
    size, steps = (32, 5) if quick else (64, 10)
    d = _spec(pipe_dir, clip_name, occupations=occ, n=8 if quick else 16, batch=8, steps=steps, size=size)
    spec = parse_spec(d, source="bench.toml")
    pipe = load_pipeline(pipe_dir, device="cpu", dtype="float32")
    clf = ZeroShotClassifier.from_spec(spec.classifier)
    clip = (clf.model, clf.preprocess, torch.from_numpy(clf.text_weights), clf.logit_scale)
    n_images = len(occ) * spec.images_per_prompt + len(occ) * 2 * spec.controls.images_per_prompt

    def ours(run: Path) -> float:
        t0 = time.perf_counter()
        generate_images(spec, run, pipe=pipe, progress=False, state=DistState())
        images = score_images(spec, run, classifier=clf, progress=False, state=DistState())
        audit_metrics(images=images, n_boot=spec.report.n_boot, seed=0)
        return time.perf_counter() - t0

    t_ours, t_hand, c_ours, c_hand = [], [], [], []
    for r in range(repeats):
        for who in ("ours", "hand") if r % 2 == 0 else ("hand", "ours"):
            run = tmp / f"e2e_{who}_{r}"
            c0 = time.process_time()  # CPU seconds of this process (all threads): steadier on a shared machine
            wall = ours(run) if who == "ours" else hand_loop(spec, pipe, clip, run)
            cpu = time.process_time() - c0
            (t_ours if who == "ours" else t_hand).append(wall)
            (c_ours if who == "ours" else c_hand).append(cpu)
            shutil.rmtree(run, ignore_errors=True)
    # scoring alone, on the files of one run, cold cache each time
    run = tmp / "score_src"
    generate_images(spec, run, pipe=pipe, progress=False, state=DistState())
    paths = sorted((run / "images").rglob("*.png"))
    s_ours, s_raw, sc_ours, sc_raw = [], [], [], []
    for r in range(max(5, 2 * repeats)):  # cheap: more repeats, a steadier best-of
        for who in ("ours", "raw") if r % 2 == 0 else ("raw", "ours"):
            t0, c0 = time.perf_counter(), time.process_time()
            if who == "ours":
                score_images(
                    spec, run, classifier=clf, cache=tmp / f"cache_{r}.sqlite", progress=False, state=DistState()
                )
                s_ours.append(time.perf_counter() - t0)
                sc_ours.append(time.process_time() - c0)
            else:
                raw_open_clip(clip, paths, spec.classifier.batch_size)
                s_raw.append(time.perf_counter() - t0)
                sc_raw.append(time.process_time() - c0)
    e2e = min(t_hand) / min(t_ours)
    sc = min(s_raw) / min(s_ours)
    return {
        "images": n_images,
        "batch_size": spec.batch_size,
        "steps": spec.pipeline.steps,
        "size": size,
        "e2e_ours_s": min(t_ours),
        "e2e_hand_s": min(t_hand),
        "e2e_ratio": e2e,
        "score_images": len(paths),
        "score_ours_s": min(s_ours),
        "score_raw_s": min(s_raw),
        "score_ratio": sc,
        "e2e_cpu_ratio": min(c_hand) / min(c_ours),
        "score_cpu_ratio": min(sc_raw) / min(sc_ours),
        "e2e_cpu": {"ours": c_ours, "hand": c_hand},
        "score_cpu": {"ours": sc_ours, "raw": sc_raw},
        "threads": torch.get_num_threads(),
        "open_clip": open_clip.__version__,
        "e2e_all": {"ours": t_ours, "hand": t_hand},
        "score_all": {"ours": s_ours, "raw": s_raw},
        "_np": np.__version__,
    }


_MEM_CHILD = r"""
import resource, sys, time
from diffkit.audit import load_spec, run_audit
t0 = time.perf_counter()
r = run_audit(load_spec(sys.argv[1]), out=sys.argv[2], progress=False)
print("RESULT", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, len(r.images), time.perf_counter() - t0)
"""


def bench_memory(tmp: Path, pipe_dir: Path, clip_name: str, quick: bool) -> dict:
    """Peak RSS of a fresh process; the judge is the 32-pixel test CLIP (memory, not speed, is measured)."""
    occ = ["nurse", "pilot", "CEO", "teacher", "lawyer"]
    small, large = (100, 1000) if quick else (200, 2000)
    out = {}
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}
    for total in (small, large):
        n = total // len(occ) - 2 * 2  # audit images per prompt; 2 × 2 controls per occupation
        d = _spec(pipe_dir, clip_name, occupations=occ, n=n, batch=16, steps=1, size=32)
        f = tmp / f"mem_{total}.toml"
        f.write_text(_toml(d))
        r = subprocess.run(
            [sys.executable, "-c", _MEM_CHILD, str(f), str(tmp / f"mem_{total}")],
            capture_output=True,
            text=True,
            env=env,
        )
        if r.returncode:
            raise RuntimeError(r.stderr[-3000:])
        line = [x for x in r.stdout.splitlines() if x.startswith("RESULT")][-1].split()
        out[total] = {"max_rss_mib": int(line[1]) / 1024, "images": int(line[2]), "seconds": float(line[3])}
    out["ratio"] = out[large]["max_rss_mib"] / out[small]["max_rss_mib"]
    return out


def bench_sharding(tmp: Path, pipe_dir: Path, clip_name: str, quick: bool) -> dict:
    import socket

    occ = ["nurse", "pilot", "CEO", "teacher"]
    size, steps = (32, 5) if quick else (64, 10)
    d = _spec(pipe_dir, clip_name, occupations=occ, n=12 if quick else 24, batch=4, steps=steps, size=size)
    f = tmp / "shard.toml"
    f.write_text(_toml(d))
    env1 = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "DIFFKIT_QUIET": "1"}
    env2 = {**env1, "OMP_NUM_THREADS": "2"}
    accelerate = Path(sys.executable).with_name("accelerate")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmds = {
        "one process, 1 thread": (
            [sys.executable, "-m", "diffkit", "audit", "run", str(f), "--no-progress", "--out"],
            env1,
        ),
        "one process, 2 threads": (
            [sys.executable, "-m", "diffkit", "audit", "run", str(f), "--no-progress", "--out"],
            env2,
        ),
        "2 processes × 1 thread (accelerate)": (
            [
                str(accelerate),
                "launch",
                "--multi_gpu",
                "--num_processes",
                "2",
                "--num_machines",
                "1",
                "--mixed_precision",
                "no",
                "--dynamo_backend",
                "no",
                "--main_process_port",
                str(port),
                "-m",
                "diffkit",
                "audit",
                "run",
                str(f),
                "--no-progress",
                "--out",
            ],
            env1,
        ),
    }
    out = {}
    for name, (cmd, env) in cmds.items():
        run = tmp / ("shard_" + str(len(out)))
        t0 = time.perf_counter()
        r = subprocess.run(cmd + [str(run)], capture_output=True, text=True, env=env)
        if r.returncode:
            raise RuntimeError(r.stderr[-3000:])
        out[name] = time.perf_counter() - t0
    out["images"] = len(occ) * (d["audit"]["images_per_prompt"] + 4)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="scaled-down sizes (documented in the output)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=["throughput", "memory", "sharding"], action="append")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args()
    only = set(args.only or ["throughput", "memory", "sharding"])

    from diffkit.audit._testing import save_test_clip
    from diffkit.testing import save_tiny_random_pipeline

    tmp = Path(tempfile.mkdtemp(prefix="diffkit-bench-audit-"))
    results: dict = {"quick": args.quick, "cpu_count": os.cpu_count(), "load_avg": os.getloadavg()}
    try:
        pipe_dir = save_tiny_random_pipeline(tmp / "pipe")
        clip_name = save_test_clip(tmp / "clip", config=BENCH_CLIP)
        if "throughput" in only:
            t = bench_throughput(tmp, pipe_dir, clip_name, args.repeats, args.quick)
            results["throughput"] = t
            print(
                f"end to end  ({t['images']} images, {t['size']}×{t['size']}, {t['steps']} steps, "
                f"batch {t['batch_size']}): "
                f"diffkit {t['e2e_ours_s']:.1f} s, hand-written loop {t['e2e_hand_s']:.1f} s "
                f"-> throughput ratio {t['e2e_ratio']:.3f}× (target ≥ 0.95); "
                f"by CPU time {t['e2e_cpu_ratio']:.3f}×"
            )
            print(
                f"scoring     ({t['score_images']} images, ViT-S/32-sized CLIP, cold cache): diffkit "
                f"{t['score_ours_s']:.2f} s, raw open_clip {t['score_raw_s']:.2f} s "
                f"-> ratio {t['score_ratio']:.3f}× (target ≥ 0.95); by CPU time {t['score_cpu_ratio']:.3f}×"
            )
        if "memory" in only:
            m = bench_memory(tmp, pipe_dir, save_test_clip(tmp / "small_clip"), args.quick)
            results["memory"] = m
            (a, ma), (b, mb) = [(k, v) for k, v in m.items() if k != "ratio"]
            print(
                f"peak memory (max RSS, whole audit + report, 32×32, 1 step): {ma['images']} images "
                f"{ma['max_rss_mib']:.0f} MiB, {mb['images']} images {mb['max_rss_mib']:.0f} MiB "
                f"-> ratio {m['ratio']:.3f} (target within 10%)"
            )
        if "sharding" in only:
            s = bench_sharding(tmp, pipe_dir, clip_name, args.quick)
            results["sharding"] = s
            base1 = s["one process, 1 thread"]
            base2 = s["one process, 2 threads"]
            two = s["2 processes × 1 thread (accelerate)"]
            print(
                f"sharding    ({s['images']} images, whole `diffkit audit run` incl. start-up): one process "
                f"1 thread {base1:.1f} s, 2 threads {base2:.1f} s; accelerate 2 processes {two:.1f} s "
                f"-> speedup {base1 / two:.2f}× vs 1 thread, {base2 / two:.2f}× vs 2 threads"
            )
        results["load_avg_end"] = os.getloadavg()
        print(
            f"(machine: {os.cpu_count()} CPUs, load average {results['load_avg'][0]:.1f} at start, "
            f"{results['load_avg_end'][0]:.1f} at end)"
        )
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
