"""Speed and memory of the hot paths on real data (issues 2, 3 and 8).

    IBD_DATA_DIR=../shared/data python benchmarks/bench_speed.py --dataset citeulike-t --model cdae

Prints the issue-8 table: seconds per warm-up epoch of the teacher and the student alone, one
full-ranking evaluation of every user, one plain BD epoch (fresh draws, no refresh), one rank refresh of
both models, the per-epoch student rankings RD and CD add, the BD and iBD epochs averaged over `--epochs` epochs with ranks refreshed every P epochs
(refresh included), and the process's peak resident memory. `--cprofile` adds the top functions of one
refresh and one BD epoch (where the time goes).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import pstats
import resource
import time

import torch

from ibd_lite.bd import DIRS
from ibd_lite.config import make_config
from ibd_lite.data import load_split
from ibd_lite.methods import BDState, Context, make_learner, new_model, ranks_of_items, top_items
from ibd_lite.metrics import evaluate
from ibd_lite.provenance import device_name
from ibd_lite.sampling import UnobservedSampler
from ibd_lite.train import train_epoch

ROWS = [("epoch_s_teacher", "teacher warm-up epoch"), ("epoch_s_student", "student warm-up epoch"),
        ("eval_all_users_s", "full-ranking evaluation (teacher)"), ("bd_plain_epoch_s", "plain BD epoch"),
        ("refresh_s", "rank refresh of both models"),
        ("rd_rank_s", "RD's per-epoch ranks (student, the teacher's top 10)"),
        ("cd_rank_s", "CD's per-epoch student top list (depth 30·ν)"), ("bd_epoch_s_mean", "BD epoch, averaged with refreshes"),
        ("ibd_epoch_s_mean", "iBD epoch, averaged with refreshes"), ("peak_rss_gb", "peak resident memory (GB)")]


def timed(fn, repeat: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def top_functions(fn, n: int = 12) -> str:
    """cProfile of one call of fn: the n functions with the most time spent in themselves."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(n)
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="citeulike-t")
    ap.add_argument("--model", default="cdae")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=10, help="BD/iBD epochs to average over (one refresh at P=10)")
    ap.add_argument("--repeat", type=int, default=2, help="warm-up epochs and evaluations timed (averaged)")
    ap.add_argument("--cprofile", action="store_true", help="also profile one refresh and one BD epoch")
    ap.add_argument("--threads", type=int, default=0, help="torch/numpy threads (0: torch's default)")
    ap.add_argument("--only", choices=("all", "scoring"), default="all",
                    help="scoring: time only the full-ranking evaluation and the refresh (after one epoch each)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = make_config(dataset=a.dataset, model=a.model, profile=a.profile, device=a.device, method="bd")
    split = load_split(cfg.dataset)
    dev = torch.device(cfg.device)
    ctx = Context(cfg, split, dev, UnobservedSampler(split, dev), progress=False)
    out = {"dataset": cfg.dataset, "model": cfg.model, "dims": [cfg.teacher_dim, cfg.student_dim],
           "device": device_name(dev), "threads": torch.get_num_threads()}
    t, s = new_model(ctx, "teacher"), new_model(ctx, "student")
    tl, sl = make_learner(ctx, "teacher", t), make_learner(ctx, "student", s)

    def epoch(learners) -> None:
        train_epoch(learners, split, ctx.sampler, cfg.neg_per_pos, cfg.batch_size)

    for name, l in (("teacher", tl), ("student", sl)):
        epoch([l])                                                                   # warm-up, not timed
        if a.only == "all":
            out[f"epoch_s_{name}"] = timed(lambda: epoch([l]), a.repeat)
    t.eval()
    out["eval_all_users_s"] = timed(lambda: evaluate(t, split, "test"), a.repeat)
    state = BDState(ctx, t, s, tl, sl)
    out["refresh_s"] = timed(state.do_refresh)
    if a.only == "scoring":
        report(cfg, out, {})
        return
    # RD and CD re-rank for the student every epoch (methods.run_rd / run_cd): the part they add to an epoch
    top = top_items(ctx, t, cfg.rd_k)                                                # [n_users, 10]
    out["rd_rank_s"] = timed(lambda: ranks_of_items(ctx, s, top), a.repeat)
    depth = min(split.n_items - int(split.train_counts.max()), max(1, math.ceil(30 * cfg.cd_mu)))
    out["cd_rank_s"] = timed(lambda: top_items(ctx, s, depth), a.repeat)

    def plain_bd_epoch() -> None:
        state.set_kd({d: state.samplers[d].sample(state.n_u) for d in DIRS})
        epoch([tl, sl])

    plain_bd_epoch()
    out["bd_plain_epoch_s"] = timed(plain_bd_epoch, a.repeat)
    profiles = {"refresh": top_functions(state.do_refresh), "bd_epoch": top_functions(plain_bd_epoch)} \
        if a.cprofile else {}
    cfg.rounds = max(cfg.rounds, 2)
    for method in ("bd", "ibd"):
        state = BDState(ctx, t, s, tl, sl)
        hook = state.ibd_epoch if method == "ibd" else state.bd_epoch

        def epochs() -> None:
            for e in range(1, a.epochs + 1):
                hook(e)
                epoch([tl, sl])
        out[f"{method}_epoch_s_mean"] = timed(epochs) / a.epochs
    report(cfg, out, profiles)


def report(cfg, out: dict, profiles: dict) -> None:
    """Print the measurements as JSON and as a markdown table (the rows that were measured)."""
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}))
    print(f"\n| {cfg.dataset} {cfg.model} {cfg.teacher_dim}/{cfg.student_dim} | ibd_lite |\n|---|---|")
    for key, label in ROWS:
        if key in out:
            print(f"| {label} | {out[key]:.3f} |")
    for name, text in profiles.items():
        print(f"\n## cProfile: one {name}\n{text}")


if __name__ == "__main__":
    main()
