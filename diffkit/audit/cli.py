"""``diffkit audit run | report | compare``: registered by :func:`add_commands`."""

from __future__ import annotations

import argparse
import os

__all__ = ["add_commands"]


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``audit`` with its three sub-commands to the ``diffkit`` parser's *subparsers*."""
    audit = subparsers.add_parser(
        "audit", help="audit a text-to-image model for gender bias",
        description="Generate prompt sets, classify perceived gender with CLIP, report honest statistics.",
    )
    sub = audit.add_subparsers(dest="audit_command", required=True, metavar="{run,report,compare}")

    run = sub.add_parser(
        "run", help="generate, score and report one audit (resumes an interrupted run)",
        description="Run an audit spec end to end. Under `accelerate launch` (or torchrun) the images are "
        "sharded across processes, e.g. `accelerate launch --multi_gpu --num_processes 2 -m diffkit audit run SPEC`.",
    )
    run.add_argument("spec", nargs="?", default="tiny_default",
                     help="a TOML spec, or a bundled name (default: tiny_default, diffkit-tiny on its pictogram world)")
    run.add_argument("--out", metavar="DIR", help="run folder (default: out/audit/<spec name>)")
    run.add_argument("--model", metavar="ID", help="pipeline to audit instead of the spec's: 'tiny', a hub id or a folder")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    run.set_defaults(func=_run)

    rep = sub.add_parser("report", help="rewrite the report of a run folder")
    rep.add_argument("run_dir", metavar="DIR")
    rep.add_argument("--no-progress", action="store_true")
    rep.set_defaults(func=_report)

    cmp_ = sub.add_parser("compare", help="compare two runs (DIR_B − DIR_A, with intervals)")
    cmp_.add_argument("run_a", metavar="DIR_A")
    cmp_.add_argument("run_b", metavar="DIR_B")
    cmp_.add_argument("--out", metavar="DIR", help="where to write compare.html (default: DIR_B/compare)")
    cmp_.set_defaults(func=_compare)


def _run(args: argparse.Namespace) -> int:
    from .api import run_audit

    result = run_audit(args.spec, out=args.out, model=args.model, progress=not args.no_progress)
    if result is None:  # a non-main process of a sharded run
        return 0
    _print_headline(result)
    print(f"report: {result.report}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .api import report_audit

    result = report_audit(args.run_dir, progress=not args.no_progress)
    _print_headline(result)
    print(f"report: {result.report}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .api import compare_audits

    _, overall, path = compare_audits(args.run_a, args.run_b, out=args.out)
    for _, r in overall.iterrows():
        ci = "" if r["ci_low"] != r["ci_low"] else f"  [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        print(f"{r['metric']:>22}: a {r['a']:.3f}  b {r['b']:.3f}  b − a {r['diff']:+.3f}{ci}")
    print(f"comparison: {path}")
    return 0


def _print_headline(result) -> None:
    ov = {r["metric"]: r for _, r in result.overall.iterrows()}
    if os.environ.get("DIFFKIT_QUIET"):
        return
    for name in ("mean_imbalance", "mean_fair_baseline", "pearson_r", "amplification_share", "sensitivity",
                 "specificity"):
        if name in ov:
            r = ov[name]
            ci = "" if r["ci_low"] != r["ci_low"] else f"  [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
            print(f"{name:>20}: {r['value']:.3f}{ci}")
