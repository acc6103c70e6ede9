"""Samplers: uniform negatives, full rank matrices, BD's rank-discrepancy weights (SPEC §5),
RD's position/discrepancy weights and CD's rank-aware probabilities (SPEC §4).

Everything is batched over users: no Python loop over users or items in a hot path.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
import torch

from .errors import ConfigError
from .sparse import counts_to_indptr

DIRECTIONS = ("paper", "released")
_EXP_CAP = 80.0  # exp(80) ~ 5.5e34 still fits float32; larger exponents are capped (sampling is ∝ anyway)


class UnobservedSampler:
    """Draws items uniformly from each user's unobserved training items (rejection, vectorised).

    It also holds the split's training interactions on the training device, so an epoch moves no data.
    """

    def __init__(self, split, device: "torch.device | str" = "cpu"):
        users, items = split.train_pairs()
        self.n_items = split.n_items
        self.device = torch.device(device)
        self.train_users, self.train_items = users.to(device), items.to(device)     # [n_train]
        self.indptr, self.indices = split.train_indptr.to(device), split.train_indices.to(device)
        self.keys = torch.sort(self.train_users * split.n_items + self.train_items).values  # [n_train] sorted

    def is_observed(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Bool mask: is (user, item) a training interaction? Same shape as items."""
        cand = users * self.n_items + items
        idx = torch.searchsorted(self.keys, cand).clamp_(max=len(self.keys) - 1)
        return self.keys[idx] == cand

    def sample(self, users: torch.Tensor, k: int, generator: torch.Generator | None = None,
               max_rounds: int = 100) -> torch.Tensor:
        """k uniform unobserved items per entry of `users` [n] -> [n, k]."""
        u = users.view(-1, 1).expand(-1, k)
        out = torch.randint(self.n_items, u.shape, device=users.device, generator=generator)
        bad = self.is_observed(u, out)
        for _ in range(max_rounds):
            n_bad = int(bad.sum())
            if n_bad == 0:
                return out
            out[bad] = torch.randint(self.n_items, (n_bad,), device=users.device, generator=generator)
            bad = self.is_observed(u, out)
        raise ConfigError("could not draw unobserved items: some user has (almost) every item in training")


def ranks_from_scores(scores: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Rank of every item per row, 1 = highest score among unobserved items; observed items rank last.

    scores [b, n] float, observed [b, n] bool -> int32 [b, n]. Ties are broken arbitrarily.
    """
    s = scores.detach().float().masked_fill(observed, float("-inf"))
    b, n = s.shape
    if s.is_cuda:
        order = torch.argsort(s, dim=1, descending=True)
        ranks = torch.empty((b, n), dtype=torch.int32, device=s.device)
        ranks.scatter_(1, order, torch.arange(1, n + 1, dtype=torch.int32, device=s.device).expand(b, -1))
        return ranks
    # On the CPU numpy's SIMD quicksort is ~4x faster than torch.argsort; it releases the GIL,
    # so row blocks sort in parallel threads.
    neg = (-s).numpy()
    ranks = np.empty((b, n), dtype=np.int32)
    positions = np.arange(1, n + 1, dtype=np.int32)[None, :]

    def block(lo: int) -> None:
        hi = min(lo + 64, b)
        order = np.argsort(neg[lo:hi], axis=1)
        np.put_along_axis(ranks[lo:hi], order, positions, axis=1)

    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
        list(pool.map(block, range(0, b, 64)))
    return torch.from_numpy(ranks)


@torch.no_grad()
def rank_matrix(score_fn: Callable[[torch.Tensor], torch.Tensor], split, device="cpu",
                batch_users: int = 512) -> torch.Tensor:
    """Ranks int32 [n_users, n_items] of a model's scores among each user's unobserved items."""
    out = torch.empty((split.n_users, split.n_items), dtype=torch.int32, device=device)
    for start in range(0, split.n_users, batch_users):
        users = torch.arange(start, min(start + batch_users, split.n_users), device=device)
        observed = split.train_mask(users.cpu()).to(device)
        out[start:start + len(users)] = ranks_from_scores(score_fn(users), observed).to(device)
    return out


def bd_weights(rank_t: torch.Tensor, rank_s: torch.Tensor, unobserved: torch.Tensor,
               eps_t: float, eps_e: float, direction: str = "paper") -> tuple[torch.Tensor, torch.Tensor]:
    """Unnormalised BD sampling weights (w_ts, w_st), each [n_users, n_items], zero on observed items.

    paper:    w_ts = tanh(max(ε_t (rank_S − rank_T), 0))  (student learns what the teacher ranks higher)
              w_st = exp(ε_e (rank_T − rank_S))          (teacher learns what the student ranks higher)
    released: both differences negated, as BD's released code (ascending ranks) samples.
    """
    if direction not in DIRECTIONS:
        raise ConfigError(f"bd_direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    diff = rank_s.float() - rank_t.float()            # > 0: the teacher ranks the item higher
    if direction == "released":
        diff = -diff
    w_ts = torch.tanh((eps_t * diff).clamp_(min=0))
    w_st = torch.exp((-eps_e * diff).clamp_(max=_EXP_CAP))
    return w_ts * unobserved, w_st * unobserved


class CdfSampler:
    """Samples with replacement from per-user weights via inverse CDF (same law as torch.multinomial).

    The cumulative sums are built once per rank refresh; each epoch then costs one `searchsorted`.
    The weight tensor is turned into its cumulative sum in place to keep memory flat.
    """

    def __init__(self, weights: torch.Tensor, is_cdf: bool = False):
        if is_cdf:
            self.cdf = weights
        else:
            self.cdf = weights.cumsum_(dim=1) if weights.is_floating_point() else weights.float().cumsum(1)
        self.total = self.cdf[:, -1].clone()                            # [n_users]
        self.last = torch.argmax(self.cdf, dim=1)                        # last item with positive weight

    def sample(self, counts: torch.Tensor, generator: torch.Generator | None = None,
               block: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw counts[u] items for every user u with positive total weight.

        Returns CSR (indptr [n_users+1], items [Σ counts]); a user with all-zero weights gets none.
        """
        dev = self.cdf.device
        counts = torch.where(self.total > 0, counts.to(dev), torch.zeros_like(counts, device=dev))
        indptr = counts_to_indptr(counts)
        items = torch.empty(int(indptr[-1]), dtype=torch.long, device=dev)
        order = torch.argsort(counts)                       # blocks of users with similar counts: little padding
        order = order[counts[order] > 0]
        for lo in range(0, len(order), block):
            users = order[lo:lo + block]
            c = counts[users]
            m = int(c[-1])
            r = torch.rand((len(users), m), device=dev, generator=generator) * self.total[users, None]
            idx = torch.searchsorted(self.cdf[users], r, right=True)             # [b, m]
            idx = torch.minimum(idx, self.last[users, None])
            col = torch.arange(m, device=dev)[None, :]
            keep = col < c[:, None]
            items[(indptr[users, None] + col)[keep]] = idx[keep]
        return indptr, items


def rd_position_weights(k: int, lam: float = 1.0) -> torch.Tensor:
    """RD's w^a_r ∝ exp(−r/λ) for r = 1..K, normalised to sum to 1. -> [K]"""
    w = torch.exp(-torch.arange(1, k + 1, dtype=torch.float64) / lam)
    return (w / w.sum()).float()


def rd_weights(student_rank: torch.Tensor, lam: float = 1.0, mu: float = 0.1,
               use_discrepancy: bool = True) -> torch.Tensor:
    """RD weights over the teacher's top-K items, normalised per user.

    student_rank [n, K]: the student's 1-based rank of the teacher's r-th item (r = 1..K).
    w_r ∝ w^a_r · w^b_r with w^b_r = tanh(max(μ (r̂_S − r), 0)); only w^a_r when `use_discrepancy` is off.
    A user whose discrepancy weights are all zero falls back to w^a (the student already agrees).
    """
    k = student_rank.shape[1]
    wa = rd_position_weights(k, lam).to(student_rank.device).expand(student_rank.shape[0], -1)
    if not use_discrepancy:
        return wa.clone()
    r = torch.arange(1, k + 1, device=student_rank.device, dtype=torch.float32)
    wb = torch.tanh((mu * (student_rank.float() - r)).clamp(min=0))
    w = wa * wb
    total = w.sum(1, keepdim=True)
    return torch.where(total > 0, w / total.clamp(min=1e-30), wa)


def cd_probabilities(guide_rank: torch.Tensor, mu: float) -> torch.Tensor:
    """CD's rank-aware sampling law p(i) ∝ exp(−rank_G(i)/μ) over given ranks [n, L], rows sum to 1."""
    logits = -guide_rank.double() / mu
    return torch.softmax(logits, dim=1).float()
