"""The quality figures of diffkit-tiny (issue 3) and its speed on this CPU.

    python benchmarks/bench_tiny_quality.py [--pipeline DIR] [--clip DIR] [--seeds 8] [--neutral 64]

Prints, measured by the pixel oracle on generated images (25 steps of the folder's own
sampler, PNDM on diffkit-tiny 2):

* shape prompts, every colour × shape, at guidance 5 and 7.5: colour and shape adherence;
* "a woman {occupation}" / "a man {occupation}" at guidance 5 and 7.5: gender and occupation;
* neutral "a {occupation}": generated women-share beside the training share;
* tiny CLIP against the oracle on generated pictograms (woman/man agreement);
* speed: one image and a batch of 16, 25 steps with guidance, as ``diffkit.load_pipeline``
  loads the folder (native CPU convolutions for a small U-Net), beside plain diffusers'
  loading (oneDNN) and, with ``--compare DIR``, another pipeline, in the same run;
* with ``--schedulers all`` (or names from :data:`diffkit.SCHEDULERS`): the shape and gender
  figures again for every scheduler the explorers offer, swapped in the way diffusers swaps
  them (``from_config`` of the folder's scheduler), and the worst scheduler per figure
  (issue 11's bar holds for all nine, not only the default);
* with ``--attention``: the colour and shape words' cross-attention per pixel inside the
  generated object against the background, middle third of the steps, all cross-attention
  layers, every "a {color} {shape}" × ``--attention-seeds`` (issue 11's bar: ratio ≥ 2).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pipeline", type=Path, default=None, help="pipeline folder (default: the shipped one)")
    p.add_argument("--clip", type=Path, default=None, help="CLIP folder (default: the shipped one)")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--neutral", type=int, default=64, help="images per neutral prompt")
    p.add_argument(
        "--guidance-scale",
        "--guidance",  # its old name, kept for one release
        dest="guidance_scale",
        type=float,
        nargs="+",
        default=[5.0, 7.5],
    )
    p.add_argument("--threads", type=int, default=int(os.environ.get("DIFFKIT_THREADS", "2")))
    p.add_argument("--skip", nargs="*", default=[], choices=["shapes", "gender", "neutral", "clip", "speed"])
    p.add_argument(
        "--schedulers",
        nargs="*",
        default=[],
        help="'all' or scheduler names: shape and gender figures per scheduler (last --guidance-scale)",
    )
    p.add_argument("--attention", action="store_true", help="the attention-localisation figure")
    p.add_argument("--compare", default=None, help="another pipeline folder to time beside this one (speed)")
    p.add_argument("--attention-seeds", type=int, default=4)
    p.add_argument(
        "--device",
        default="cpu",
        help="where to generate (the figures; speed is this CPU's bar, so --skip speed elsewhere)",
    )
    args = p.parse_args()

    import pandas as pd
    import torch
    from diffusers import StableDiffusionPipeline

    from diffkit import tiny
    from diffkit.tiny import clip as tclip
    from diffkit.tiny import quality as q

    torch.set_num_threads(args.threads)
    pd.set_option("display.width", 160)
    path = args.pipeline or tiny.pipeline_path()
    pipe = StableDiffusionPipeline.from_pretrained(path).to(args.device)  # float32
    pipe.set_progress_bar_config(disable=True)
    print(f"pipeline: {path}  threads: {args.threads}  device: {args.device}")
    person_images = []

    if "shapes" not in args.skip:
        for g in args.guidance_scale:
            df = q.evaluate(pipe, q.shape_prompts(), seeds=args.seeds, guidance_scale=g)
            s = q.summarize(df)
            print(
                f"shapes    guidance {g}: n={s['n']} colour {s['color']:.1%} shape {s['shape']:.1%}  (bars 90% / 80%)"
            )
            worst = df.groupby("color").color_ok.mean().sort_values().head(3)
            print("          weakest colours:", ", ".join(f"{k} {v:.0%}" for k, v in worst.items()))
    if "gender" not in args.skip:
        for g in args.guidance_scale:
            df = q.evaluate(pipe, q.gender_prompts(), seeds=args.seeds, guidance_scale=g)
            s = q.summarize(df)
            print(
                f"gender    guidance {g}: n={s['n']} gender {s['gender']:.1%} occupation {s['occupation']:.1%}  (bars 90% / 80%)"
            )
            person_images += list(zip(df.attrs["images"], df.read_gender))
    if "neutral" not in args.skip:
        g = args.guidance_scale[-1]
        df = q.evaluate(pipe, q.neutral_prompts(), seeds=args.neutral, guidance_scale=g)
        print(f"neutral   guidance {g}: {args.neutral} images per occupation")
        share = q.neutral_share(df)
        print(share.to_string(index=False))
        import numpy as np

        r = np.corrcoef(share.generated_women_share, share.training_women_share)[0, 1]
        print(f"neutral   Pearson r of the generated women-share with BLS: {r:.3f} (issue 11 bar 0.9)")
        person_images += list(zip(df.attrs["images"], df.read_gender))
    if "clip" not in args.skip and person_images:
        judge = tclip.load(args.clip) if args.clip else tiny.load_clip()
        oracle_says, judge_says = q.judge_labels(*zip(*person_images), judge)
        agree = sum(o == j for o, j in zip(oracle_says, judge_says)) / max(len(oracle_says), 1)
        print(
            f"tiny CLIP vs oracle on {len(oracle_says)} generated pictograms: woman/man agreement {agree:.1%} (bar 95%)"
        )
        # the per-image confusion matrix and Cohen's κ (issue 11), oracle rows, judge columns
        from diffkit.audit.truth import cohen_kappa

        print(pd.crosstab(pd.Series(oracle_says, name="oracle"), pd.Series(judge_says, name="judge")))
        print(f"Cohen's kappa, judge vs oracle: {cohen_kappa(list(oracle_says), judge_says):.3f}")
    if args.schedulers:
        from diffkit import SCHEDULERS, make_scheduler

        names = list(SCHEDULERS) if args.schedulers == ["all"] else args.schedulers
        own = pipe.scheduler
        g = args.guidance_scale[-1]
        rows = []
        for name in names:
            pipe.scheduler = make_scheduler(name, own.config)
            row = {"scheduler": name}
            row.update(q.summarize(q.evaluate(pipe, q.shape_prompts(), seeds=args.seeds, guidance_scale=g)))
            row.update(q.summarize(q.evaluate(pipe, q.gender_prompts(), seeds=args.seeds, guidance_scale=g)))
            row.pop("n")
            rows.append(row)
            print(
                f"scheduler {name:15s} guidance {g}: "
                + "  ".join(f"{k} {v:.1%}" for k, v in row.items() if k != "scheduler"),
                flush=True,
            )
        pipe.scheduler = own
        table = pd.DataFrame(rows).set_index("scheduler")
        for col, bar in (("color", 0.95), ("shape", 0.90), ("gender", 0.95), ("occupation", 0.90)):
            print(f"worst scheduler for {col}: {table[col].idxmin()} {table[col].min():.1%} (issue 11 bar {bar:.0%})")
    if args.attention:
        g = args.guidance_scale[-1]
        df = q.attention_localisation(pipe, seeds=args.attention_seeds, guidance_scale=g)
        ok = df[df.mask_pixels > 0]
        for word, d in ok.groupby("word"):
            print(
                f"attention {word:5s} guidance {g}: inside/outside per pixel {d.inside.mean() / d.outside.mean():.2f} "
                f"(mean of per-image ratios {d.ratio.mean():.2f}; {len(d)} images; bar 2.0)"
            )
        print(
            f"attention both words: {ok.inside.mean() / ok.outside.mean():.2f} "
            f"({(df.mask_pixels == 0).sum() // 2} images without an object left out)"
        )
    if "speed" not in args.skip:
        # issue 11's bars: one image in 0.5 s, 0.2 s per image in a batch of 16, as a user gets
        # it from diffkit.load_pipeline (native convolutions for a small U-Net on the CPU);
        # the same folder loaded by plain diffusers (oneDNN) and, with --compare, another
        # pipeline are timed in the same run, interleaved, and the ratios printed
        from diffkit import load_pipeline

        others = {"this": load_pipeline(path, device="cpu"), "this, plain diffusers": pipe}
        if args.compare:
            others["compare"] = load_pipeline(args.compare, device="cpu")
        for n, bar in ((1, 0.5), (16, 16 * 0.2)):
            prompts = ["a red circle"] * n
            times: dict[str, list[float]] = {k: [] for k in others}
            for p_ in others.values():
                p_(prompts, num_inference_steps=25, guidance_scale=7.5)  # warm-up
            for _ in range(3):
                for k, p_ in others.items():
                    t0 = time.perf_counter()
                    p_(
                        prompts,
                        num_inference_steps=25,
                        guidance_scale=7.5,
                        generator=torch.Generator().manual_seed(0),
                    )
                    times[k].append(time.perf_counter() - t0)
            for k, ts in times.items():
                print(
                    f"speed ({k}): {n:2d} image(s), 25 steps, guidance 7.5: best {min(ts):.2f} s, "
                    f"median {sorted(ts)[1]:.2f} s, {min(ts) / n:.3f} s per image (bar {bar:.1f} s)"
                )
            for k in times:
                if k != "this":
                    print(f"speed ratio this / {k}: {min(times['this']) / min(times[k]):.2f}")


if __name__ == "__main__":
    main()
