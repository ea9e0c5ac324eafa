"""``diffkit audit run | report | compare``: registered by :func:`add_commands`."""

from __future__ import annotations

import argparse
import os

from ..i18n import gettext as _

__all__ = ["add_commands"]


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``audit`` with its three sub-commands to the ``diffkit`` parser's *subparsers*."""
    audit = subparsers.add_parser(
        "audit",
        help=_("audit a text-to-image model for gender bias"),
        description=_("Generate prompt sets, classify perceived gender with CLIP, report honest statistics."),
    )
    sub = audit.add_subparsers(dest="audit_command", required=True, metavar="{run,report,compare,plan}")

    run = sub.add_parser(
        "run",
        help=_("generate, score and report one audit (resumes an interrupted run)"),
        description=_(
            "Run an audit spec end to end. Under `accelerate launch` (or torchrun) the images are "
            "sharded across processes, e.g. `accelerate launch --multi_gpu --num_processes 2 -m diffkit audit run SPEC`."
        ),
    )
    run.add_argument(
        "spec",
        nargs="?",
        default="tiny_default",
        help=_("a TOML spec, or a bundled name (default: tiny_default, diffkit-tiny on its pictogram world)"),
    )
    run.add_argument("--out", metavar="DIR", help=_("run folder (default: out/audit/<spec name>)"))
    run.add_argument(
        "--model", metavar="ID", help=_("pipeline to audit instead of the spec's: 'tiny', a hub id or a folder")
    )
    run.add_argument("--no-progress", action="store_true", help=_("hide the progress bars"))
    run.set_defaults(func=_run)

    rep = sub.add_parser("report", help=_("rewrite the report of a run folder"))
    rep.add_argument("run_dir", metavar="DIR")
    rep.add_argument("--no-progress", action="store_true", help=_("hide the progress bars"))
    rep.add_argument(
        "--lang",
        choices=("en", "es"),
        help=_("language of index.html and summary.md (default: DIFFKIT_LANG, the locale)"),
    )
    rep.set_defaults(func=_report)

    cmp_ = sub.add_parser("compare", help=_("compare two runs (DIR_B − DIR_A, with intervals)"))
    cmp_.add_argument("run_a", metavar="DIR_A")
    cmp_.add_argument("run_b", metavar="DIR_B")
    cmp_.add_argument("--out", metavar="DIR", help=_("where to write compare.html (default: DIR_B/compare)"))
    cmp_.set_defaults(func=_compare)

    plan = sub.add_parser(
        "plan",
        help=_("images per prompt for a chosen interval half-width, or for a chosen power"),
        description=_(
            "How many images an audit needs (exact binomial arithmetic; see diffkit.audit.plan). "
            "Give --half-width, or --power with --imbalance."
        ),
    )
    plan.add_argument(
        "--half-width",
        type=float,
        help=_("half-width of each occupation's Clopper–Pearson interval (the report's) at p̂ = ½, e.g. 0.1"),
    )
    plan.add_argument("--power", type=float, help=_("power of the exact test of p = ½ per occupation, e.g. 0.8"))
    plan.add_argument("--imbalance", type=float, help=_("|p − ½| to detect with --power, e.g. 0.2"))
    plan.add_argument("--ci", type=float, default=0.95, help=_("confidence level (default 0.95)"))
    plan.add_argument("--occupations", type=int, default=1, help=_("occupations audited (Bonferroni for --power)"))
    plan.add_argument("--templates", type=int, default=1, help=_("prompt templates per occupation"))
    plan.add_argument(
        "--unlabelled-rate",
        type=float,
        default=0.0,
        help=_("expected share of abstentions and no-person images, e.g. 0.05"),
    )
    plan.set_defaults(func=_plan)


def _judge(spec):
    """The spec's labeller, loaded before any image is generated, so a judge that cannot be
    loaded (offline, not cached, a typo) fails first, as :class:`~diffkit.errors.ModelUnavailableError`."""
    from ..errors import DiffkitError, ModelUnavailableError
    from ._distributed import dist_state
    from .labellers import build_labeller
    from .score import judge_unavailable

    c = spec.classifier
    try:
        return build_labeller(c, device=dist_state().device)
    except (KeyboardInterrupt, ModelUnavailableError, DiffkitError):
        raise
    except Exception as e:  # noqa: BLE001 - open_clip and the hub raise many types for "cannot load"
        raise judge_unavailable(c.model, c.pretrained, e) from e


def _run(args: argparse.Namespace) -> int:
    from .api import run_audit
    from .spec import load_spec

    spec = load_spec(args.spec)
    result = run_audit(spec, out=args.out, model=args.model, progress=not args.no_progress, classifier=_judge(spec))
    if result is None:  # a non-main process of a sharded run
        return 0
    _print_headline(result)
    print(_("report: {path}").format(path=result.report))
    return 0


def _report(args: argparse.Namespace) -> int:
    from .api import report_audit
    from .rundir import load_run_spec
    from .sweep import is_sweep_folder, load_sweep_spec

    spec = load_sweep_spec(args.run_dir) if is_sweep_folder(args.run_dir) else load_run_spec(args.run_dir)
    result = report_audit(args.run_dir, progress=not args.no_progress, classifier=_judge(spec), language=args.lang)
    _print_headline(result)
    print(_("report: {path}").format(path=result.report))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .._files import ensure_folder
    from .api import compare_audits

    if args.out is not None:
        ensure_folder(args.out)  # before the comparison is computed: a file in the way fails now
    _result, overall, path = compare_audits(args.run_a, args.run_b, out=args.out)
    for _row, r in overall.iterrows():
        ci = "" if r["ci_low"] != r["ci_low"] else f"  [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        print(f"{r['metric']:>22}: a {r['a']:.3f}  b {r['b']:.3f}  b − a {r['diff']:+.3f}{ci}")
    print(_("design: {design}").format(design=overall.attrs.get("design", _("unknown"))))
    print(_("comparison: {path}").format(path=path))
    return 0


def _plan(args: argparse.Namespace) -> int:
    from .plan import plan_sample_size

    p = plan_sample_size(
        half_width=args.half_width,
        power=args.power,
        imbalance=args.imbalance,
        ci=args.ci,
        occupations=args.occupations,
        templates=args.templates,
        unlabelled_rate=args.unlabelled_rate,
    )
    print(_("goal: {goal} (achieved {achieved:.3f})").format(goal=p.goal, achieved=p.achieved))
    print(_("labelled images per occupation: {n}").format(n=p.labelled_per_occupation))
    print(
        _(
            "images per prompt: {n}  ({templates} template(s), {occupations} occupation(s), "
            "{total} audit images in all)"
        ).format(n=p.images_per_prompt, templates=p.templates, occupations=p.occupations, total=p.total_images)
    )
    print(_("rule: {rule}").format(rule=p.rule))
    return 0


def _print_headline(result) -> None:
    """The headline figures, as the report states them (one sentence for the fair test and Holm)."""
    from .metrics import format_p_value
    from .report import fair_sentence

    if os.environ.get("DIFFKIT_QUIET"):
        return
    if hasattr(result, "by_arm"):  # a sweep: one line per arm
        for _row, r in result.by_arm.iterrows():
            ci = (
                ""
                if r.get("mean_imbalance_low") != r.get("mean_imbalance_low")
                else (f"  [{r['mean_imbalance_low']:.3f}, {r['mean_imbalance_high']:.3f}]")
            )
            print(f"{r['arm']:>28}: mean_imbalance {r.get('mean_imbalance', float('nan')):.3f}{ci}")
        return
    ov = {r["metric"]: r for _row, r in result.overall.iterrows()}
    t = result.by_occupation
    for name in (
        "mean_imbalance",
        "mean_sq_imbalance",
        "fair_null_p",
        "n_unfair_holm",
        "amplification",
        "n_amplified_holm",
        "n_reversed_holm",
        "pearson_r",
        "sensitivity",
        "specificity",
    ):
        if name not in ov:
            continue
        r = ov[name]
        if name.startswith("n_"):
            flag = {
                "n_unfair_holm": "p_fair_holm",
                "n_amplified_holm": "amplified_holm",
                "n_reversed_holm": "reversed_holm",
            }[name]
            hit = t[flag] <= 1 - result.metrics.params.get("ci", 0.95) if flag == "p_fair_holm" else t[flag]
            names = ", ".join(str(o) for o in t.loc[hit.fillna(False).astype(bool), "occupation"])
            count = _("{k} of {n}").format(k=int(r["value"]), n=int(r["n"]))
            print(f"{name:>20}: {count}" + (f" ({names})" if names else ""))
        elif name == "fair_null_p":
            print(f"{name:>20}: {format_p_value(r['value'])}")
        else:
            ci = "" if r["ci_low"] != r["ci_low"] else f"  [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
            print(f"{name:>20}: {r['value']:.3f}{ci}")
    print(_("at parity everywhere?").rjust(20) + " " + fair_sentence(result.metrics))
