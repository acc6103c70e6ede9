"""Speed and memory of the hot paths on real data (issues 2 and 3).

    IBD_DATA_DIR=../shared/data python benchmarks/bench_speed.py --dataset citeulike-t --model cdae

Prints seconds per training epoch of the teacher and the student alone, one full-ranking evaluation
of every user, one rank refresh of both models, the average BD and iBD epoch with ranks refreshed every
P epochs, and the peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from ibd_lite.config import make_config
from ibd_lite.data import load_split
from ibd_lite.methods import BDState, Context, make_learner, new_model
from ibd_lite.metrics import evaluate
from ibd_lite.provenance import device_name
from ibd_lite.sampling import UnobservedSampler
from ibd_lite.train import train_epoch


def timed(fn, repeat: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="citeulike-t")
    ap.add_argument("--model", default="cdae")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=20, help="BD/iBD epochs to average over (2 refreshes at P=10)")
    a = ap.parse_args()
    cfg = make_config(dataset=a.dataset, model=a.model, profile=a.profile, device=a.device, method="bd")
    split = load_split(cfg.dataset)
    dev = torch.device(cfg.device)
    ctx = Context(cfg, split, dev, UnobservedSampler(split, dev), progress=False)
    out = {"dataset": cfg.dataset, "model": cfg.model, "dims": [cfg.teacher_dim, cfg.student_dim],
           "device": device_name(dev)}
    t, s = new_model(ctx, "teacher"), new_model(ctx, "student")
    tl, sl = make_learner(ctx, "teacher", t), make_learner(ctx, "student", s)
    for name, l in (("teacher", tl), ("student", sl)):
        train_epoch([l], split, ctx.sampler, cfg.neg_per_pos, cfg.batch_size)       # warm-up
        out[f"epoch_s_{name}"] = timed(lambda: train_epoch([l], split, ctx.sampler, cfg.neg_per_pos, cfg.batch_size), 3)
    t.eval()
    evaluate(t, split, "test")
    out["eval_all_users_s"] = timed(lambda: evaluate(t, split, "test"), 3)
    for method in ("bd", "ibd"):
        state = BDState(ctx, t, s, tl, sl)
        hook = state.ibd_epoch if method == "ibd" else state.bd_epoch
        cfg.rounds = max(cfg.rounds, 2)

        def epochs() -> None:
            for e in range(1, a.epochs + 1):
                hook(e)
                train_epoch([tl, sl], split, ctx.sampler, cfg.neg_per_pos, cfg.batch_size)
        out[f"{method}_epoch_s_mean"] = timed(epochs) / a.epochs
        out[f"{method}_refresh_s_mean"] = state.refresh_seconds / (a.epochs // cfg.refresh_every)
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}, indent=1))


if __name__ == "__main__":
    main()
