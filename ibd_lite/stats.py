"""Paired comparison of two methods on the same seeds (SPEC §8).

Each result keeps every user's 0-based test rank of the held-out item per model. For methods A and B
run with the same seeds, the per-user difference of a metric (H@K or N@K) is averaged over the seeds
(a user's seeds stay together), and the mean over users gets a 95% confidence interval from a bootstrap
that resamples users. B is "ahead of" A only when the interval excludes 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import ConfigError


def per_user_metric(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Per-user H@K (1 if rank < K) or N@K (1/log2(rank+2) if rank < K) from 0-based ranks."""
    kind, _, k = metric.partition("@")
    if kind not in ("H", "N") or not k.isdigit():
        raise ConfigError(f"unknown metric {metric!r}; use H@K or N@K, e.g. H@50 or N@100")
    r = np.asarray(ranks, dtype=np.float64)
    hit = (r < int(k)).astype(np.float64)
    return hit if kind == "H" else hit / np.log2(r + 2.0)


def paired_bootstrap(diff: np.ndarray, n_boot: int = 10_000, level: float = 0.95, seed: int = 0,
                     chunk: int = 500) -> dict[str, float]:
    """Mean of per-user differences and its bootstrap CI over users.

    diff [n_users] or [n_users, n_seeds] (seeds are averaged per user first). Returns mean, lo, hi and a
    two-sided bootstrap p-value (how often the resampled mean falls on the other side of 0, doubled;
    floored at 1/n_boot).
    """
    d = np.asarray(diff, dtype=np.float64)
    d = d.mean(axis=1) if d.ndim == 2 else d
    n = len(d)
    if n == 0:
        raise ConfigError("no users to compare")
    rng = np.random.default_rng(seed)
    boot = np.concatenate([d[rng.integers(0, n, size=(min(chunk, n_boot - s), n))].mean(axis=1)
                           for s in range(0, n_boot, chunk)])                      # [n_boot]
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
    mean = float(d.mean())
    tail = min(np.mean(boot <= 0.0), np.mean(boot >= 0.0))
    p = float(min(1.0, max(2.0 * tail, 1.0 / n_boot)))
    return {"mean": mean, "lo": float(lo), "hi": float(hi), "p": p, "n_users": n}


def verdict(ci: dict[str, float], better: str = "B", worse: str = "A") -> str:
    """The words the book uses: ahead / behind only when the interval excludes 0."""
    if ci["lo"] > 0:
        return f"{better} is ahead of {worse}"
    if ci["hi"] < 0:
        return f"{better} is behind {worse}"
    return f"{better} and {worse} are not distinguishable at this budget"


def paired_difference(ranks_a: Sequence[np.ndarray], ranks_b: Sequence[np.ndarray], metric: str = "H@50",
                      n_boot: int = 10_000, seed: int = 0) -> dict[str, float]:
    """B − A on a metric from per-seed rank arrays (same seeds, same order) -> mean, CI, p, relative %."""
    if len(ranks_a) != len(ranks_b) or not ranks_a:
        raise ConfigError(f"a paired comparison needs the same seeds on both sides, got {len(ranks_a)} "
                          f"and {len(ranks_b)} runs")
    a = np.stack([per_user_metric(r, metric) for r in ranks_a], axis=1)             # [n_users, n_seeds]
    b = np.stack([per_user_metric(r, metric) for r in ranks_b], axis=1)
    if a.shape != b.shape:
        raise ConfigError(f"rank arrays differ in shape {a.shape} vs {b.shape}: not the same users")
    out = paired_bootstrap(b - a, n_boot=n_boot, seed=seed)
    base = float(a.mean())
    out.update(metric=metric, mean_a=base, mean_b=float(b.mean()), n_seeds=a.shape[1],
               rel_pct=100.0 * out["mean"] / base if base > 0 else None)
    return out
