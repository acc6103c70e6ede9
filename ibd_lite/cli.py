"""Command line: `python -m ibd_lite run ...` for one experiment, `python -m ibd_lite grid ...` for many.

Bad input (unknown names, out-of-range numbers, missing data, CUDA absent) exits with status 2 and
a message that names the problem and the fix, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from typing import Sequence

from .config import AFTER_ROUNDS, CD_GUIDES, IBD_VARIANTS, METHODS, PROFILES, Config
from .errors import IBDError

_HELP = {
    "dataset": "citeulike-t (alias citeulike), citeulike-a, foursquare-tky, foursquare-nyc, synthetic",
    "model": "cdae, neumf, bprmf", "method": ", ".join(METHODS), "profile": ", ".join(PROFILES),
    "bd_direction": "paper (SPEC) or released (BD's code)", "ibd_variant": ", ".join(IBD_VARIANTS),
    "cd_guide": ", ".join(CD_GUIDES), "after_rounds": ", ".join(AFTER_ROUNDS),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # exit 2 with usage, as argparse does, but name the fix
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n(run with --help for the valid values)\n")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(Config):
        if f.name == "extra":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.name == "ks":
            p.add_argument(flag, type=int, nargs="+", default=None, help="cut-offs K (default 50 100)")
            continue
        typ = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
        if "int" in str(f.type) and "float" not in str(f.type):
            typ = int
        elif "float" in str(f.type):
            typ = float
        p.add_argument(flag, dest=f.name, type=typ, default=None, help=_HELP.get(f.name))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m ibd_lite", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="run one experiment and write its result JSON")
    _add_config_args(r)
    r.add_argument("--out", help="result JSON path (written atomically; an identical finished run is not redone)")
    r.add_argument("--force", action="store_true", help="rerun even if --out already holds this run")
    r.add_argument("--no-cache", action="store_true", help="do not reuse or store pre-trained checkpoints")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    from .experiments import EXPERIMENTS, PROBE_EXPERIMENTS

    g = sub.add_parser("grid", help="run one of the experiment grids (resumable), see ibd_lite.experiments",
                       description="Run an experiment grid; finished runs are kept and not redone, and several "
                                   "grid commands (or --jobs N) on one --out-dir never train a run twice.")
    g.add_argument("experiment", choices=EXPERIMENTS + PROBE_EXPERIMENTS, metavar="experiment",
                   help=f"one of: {', '.join(EXPERIMENTS + PROBE_EXPERIMENTS)}")
    g.add_argument("--profile", default="quick", help=_HELP["profile"])
    g.add_argument("--dataset", default=None)
    g.add_argument("--model", default=None)
    g.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    g.add_argument("--device", default="auto")
    g.add_argument("--out-dir", default="results")
    g.add_argument("--jobs", type=int, default=1,
                   help="worker processes on this machine (default 1); each gets cores // jobs torch threads")
    g.add_argument("--quiet", action="store_true")
    rep = sub.add_parser("report", help="the paper-style tables (mean ± sd over seeds) of finished runs, with "
                                        "paired 95%% confidence intervals and the commits behind every row")
    rep.add_argument("results_dir", nargs="?", default="results/converged")
    rep.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    t = sub.add_parser("tune", help="choose each role's learning rate (then weight decay) on validation "
                                    "and store the choice in results/tuned.json")
    t.add_argument("--dataset", default="citeulike-t")
    t.add_argument("--model", default="cdae")
    t.add_argument("--profile", default="converged", help=_HELP["profile"])
    t.add_argument("--epochs", type=int, default=None, help="budget per candidate (default: the profile's warm-up)")
    t.add_argument("--lrs", type=float, nargs="+", default=None, help="default 1e-5 1e-4 1e-3 2e-3")
    t.add_argument("--wds", type=float, nargs="+", default=None, help="default 1e-6 1e-5 1e-4")
    t.add_argument("--device", default="auto")
    t.add_argument("--quiet", action="store_true")
    _add_reproduce_parser(sub)
    return parser


def _add_reproduce_parser(sub: argparse._SubParsersAction) -> None:
    from .reproduce import targets

    rp = sub.add_parser("reproduce", help="train what the paper's tables and figures need, then render them "
                                          "with papermill (resumable; see ibd_lite.reproduce)",
                        description="Train the missing runs of Tables 1-7 and Figures 3-6 (finished runs are kept), "
                                    "then execute one notebook per table and figure (book/reproduce/).")
    rp.add_argument("--profile", default="converged", help=_HELP["profile"] + " (default converged)")
    rp.add_argument("--only", nargs="+", default=None, metavar="TARGET",
                    help=f"some targets only: {', '.join(targets())}")
    rp.add_argument("--seeds", type=int, default=None,
                    help="seeds 0..N-1 everywhere (default 5 for citeulike-t/cdae, 3 elsewhere)")
    rp.add_argument("--jobs", type=int, default=1, help="runs at once on this machine (cores // jobs threads each)")
    rp.add_argument("--device", default="auto")
    rp.add_argument("--out-dir", default=None, help="result folder (default results/<profile>)")
    rp.add_argument("--nb-dir", default=None,
                    help="executed notebooks (default book/reproduced/<profile>; build/reproduced/ci for ci)")
    what = rp.add_mutually_exclusive_group()
    what.add_argument("--dry-run", action="store_true", help="print what would train and the estimated time")
    what.add_argument("--list", action="store_true", help="print one shell command per pending run (stdout)")
    what.add_argument("--no-notebooks", action="store_true", help="train only, do not execute the notebooks")
    what.add_argument("--render-only", action="store_true",
                      help="train nothing: execute the chosen targets' notebooks from the results that exist "
                           "(a table or figure without results renders a page that says what is pending)")
    rp.add_argument("--time-limit", type=_duration, default=None, metavar="DURATION",
                    help="start only runs whose estimated time fits in DURATION from now (e.g. 2h45m, 90m): a "
                         "sitting of known length ends with finished runs, not killed ones; rerun to continue")
    rp.add_argument("--quiet", action="store_true")


def _duration(text: str) -> float:
    """'2h45m', '90m', '1.5h', '600s' -> seconds (argparse type of --time-limit)."""
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?:in)?)?(?:(\d+(?:\.\d+)?)s)?", text.strip())
    if not text.strip() or m is None or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: write hours, minutes and seconds with "
                                         "their units, e.g. 2h45m, 90m or 600s")
    h, mi, sec = (float(g) if g else 0.0 for g in m.groups())
    if h * 3600 + mi * 60 + sec <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is zero: give a positive duration such as 90m")
    return h * 3600 + mi * 60 + sec


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "report":
            return _cmd_report(args)
        if args.command == "tune":
            return _cmd_tune(args)
        if args.command == "reproduce":
            return _cmd_reproduce(args)
        return _cmd_grid(args)
    except IBDError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished results are on disk; rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:        # e.g. `reproduce --list | head`: the reader stopped early, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit
        return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner import run

    names = {f.name for f in dataclasses.fields(Config)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if "ks" in overrides:
        overrides["ks"] = tuple(overrides["ks"])
    result = run(None, args.out, progress=not args.quiet, cache=not args.no_cache, force=args.force, **overrides)
    summary = {name: m["test"] for name, m in result["models"].items()}
    print(json.dumps({"method": result["config"]["method"], "test": summary,
                      "total_s": round(result["timing"]["total_s"], 2), "out": args.out}, indent=1))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import render

    print(render(args.results_dir, n_boot=args.n_boot))
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from .tuning import LR_GRID, WD_GRID, save_tuned, tune

    rec = tune(args.dataset, args.model, args.profile, epochs=args.epochs, lrs=args.lrs or LR_GRID,
               wds=args.wds or WD_GRID, device=args.device, progress=not args.quiet)
    print(json.dumps(save_tuned(rec), indent=1))
    return 0


def _cmd_grid(args: argparse.Namespace) -> int:
    from .experiments import run_experiment

    done: dict[str, list[str]] = {"trained": [], "finished": []}
    results = run_experiment(args.experiment, profile=args.profile, dataset=args.dataset, model=args.model,
                             seeds=args.seeds, device=args.device, out_dir=args.out_dir, progress=not args.quiet,
                             jobs=args.jobs, on_done=lambda path, status: done[status].append(path.name))
    print(json.dumps({"experiment": args.experiment, "runs": len(results), "out_dir": args.out_dir,
                      "trained": sorted(done["trained"]), "reused": len(done["finished"])}, indent=1))
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from . import reproduce as R

    plan = R.make_plan(args.profile, args.only, args.seeds, args.device, args.out_dir)
    if args.list:
        for line in R.list_commands(plan):
            print(line)
        return 0
    if args.dry_run:
        print(R.describe(plan, args.jobs))
        return 0
    if args.render_only:
        return _render_only(R, plan, args)
    outcome = R.train(plan, jobs=args.jobs, progress=not args.quiet, time_limit=args.time_limit)
    R.compact_store(plan)
    failed_nb = {} if args.no_notebooks else R.execute_notebooks(plan, args.nb_dir or R.default_nb_dir(args.profile),
                                                                 progress=not args.quiet)
    print(json.dumps({"profile": args.profile, "out_dir": str(plan.out_dir), "runs": len(plan.configs),
                      "trained": sorted(outcome.trained), "reused": len(outcome.finished),
                      "failed": outcome.failed, "deferred": outcome.deferred, "failed_notebooks": failed_nb},
                     indent=1))
    if outcome.deferred:
        print(f"{len(outcome.deferred)} run(s) left for later: they would not finish within --time-limit. Rerun "
              "the same command to continue", file=sys.stderr)
    if outcome.failed or failed_nb:
        print(f"error: {len(outcome.failed)} run(s) and {len(failed_nb)} notebook(s) failed (logs above); the "
              "others are done. Fix the cause and rerun the same command to resume", file=sys.stderr)
        return 1
    return 0


def _render_only(R, plan, args: argparse.Namespace) -> int:
    """--render-only: execute the notebooks from the results on disk; nothing trains, no result is rewritten."""
    nb_dir = args.nb_dir or R.default_nb_dir(args.profile)
    failed_nb = R.execute_notebooks(plan, nb_dir, progress=not args.quiet)
    print(json.dumps({"profile": args.profile, "out_dir": str(plan.out_dir), "nb_dir": str(nb_dir),
                      "runs": len(plan.configs), "finished": len(plan.done), "pending": len(plan.pending),
                      "rendered": [t.name for t in plan.targets if t.notebook and t.name not in failed_nb],
                      "failed_notebooks": failed_nb}, indent=1))
    if failed_nb:
        print(f"error: {len(failed_nb)} notebook(s) failed (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
