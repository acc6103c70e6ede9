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


RANK_METHODS = ("auto", "radix", "argsort")
_QMAX = 65534          # quantised keys: 0 = highest unobserved score ... 65534 = lowest, 65535 = observed / -inf
_ROW_BLOCK = 16        # rows ranked per thread task (keeps one block's keys and indices in cache)


def ranks_from_scores(scores: torch.Tensor, observed: torch.Tensor, *, exact: bool = True,
                      method: str = "auto") -> torch.Tensor:
    """Rank of every item per row, 1 = highest score among unobserved items; observed items rank last.

    scores [b, n] float, observed [b, n] bool -> int32 [b, n]. Equal scores rank by item index; a NaN
    score ranks with the observed items. `exact=False` ranks each row's scores quantised affinely to 16
    bits (one radix pass instead of two): an item's rank is then off by less than the number of items
    sharing its quantisation bin. `method`: "radix" (numpy's radix sort on row blocks in threads, the
    CPU default), "argsort" (one stable `torch.argsort`, the CUDA default, always exact), or "auto".
    """
    if method not in RANK_METHODS:
        raise ConfigError(f"rank method must be one of {', '.join(RANK_METHODS)}, got {method!r}")
    s = scores.detach().float().masked_fill(observed, float("-inf"))
    s = torch.nan_to_num_(s, nan=float("-inf"), posinf=float("inf"), neginf=float("-inf")).add_(0.0)  # -0 -> +0
    if method == "argsort" or (method == "auto" and s.is_cuda):
        order = torch.argsort(s, dim=1, descending=True, stable=True)
        positions = torch.arange(1, s.shape[1] + 1, dtype=torch.int32, device=s.device).expand_as(order)
        return torch.empty(order.shape, dtype=torch.int32, device=s.device).scatter_(1, order, positions)
    s_np = s.cpu().numpy()
    ranks = np.empty(s_np.shape, dtype=np.int32)
    fn = _radix_ranks_exact if exact else _radix_ranks_16
    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:   # numpy releases the GIL in its loops
        list(pool.map(lambda lo: fn(s_np[lo:lo + _ROW_BLOCK], ranks[lo:lo + _ROW_BLOCK]),
                      range(0, len(s_np), _ROW_BLOCK)))
    return torch.from_numpy(ranks)


def _radix_ranks_exact(s: np.ndarray, out: np.ndarray) -> None:
    """Exact ranks of rows of float32 scores (no NaN): LSD radix sort, low then high 16 bits of a key."""
    k = s.view(np.int32)
    key = ((~(k >> 31)) & np.int32(0x7FFFFFFF)) ^ k          # read as uint32, orders like -s
    halves = key.view(np.uint16)                             # low, high, low, high, ... (little-endian)
    off = _row_offsets(s.shape)
    o1 = np.argsort(halves[:, 0::2], axis=1, kind="stable") + off
    high = np.ascontiguousarray(halves[:, 1::2]).reshape(-1).take(o1)
    o2 = np.argsort(high, axis=1, kind="stable") + off
    pass1 = np.empty(s.size, dtype=np.int32)
    pass1[o2.reshape(-1)] = _positions(s.shape)               # rank of each position of pass 1's order
    out.reshape(-1)[o1.reshape(-1)] = pass1


def _radix_ranks_16(s: np.ndarray, out: np.ndarray) -> None:
    """Approximate ranks: one radix pass over each row's scores quantised affinely to 0.._QMAX."""
    finite = s > -np.inf
    hi = s.max(axis=1, keepdims=True)
    lo = np.min(s, axis=1, where=finite, initial=np.inf, keepdims=True)
    with np.errstate(all="ignore"):
        scale = np.nan_to_num(np.float32(_QMAX) / (hi - lo), nan=0.0, posinf=0.0, neginf=0.0)
        q = (hi - s) * scale
    np.minimum(q, _QMAX, out=q)
    q[~finite] = _QMAX + 1
    order = np.argsort(q.astype(np.uint16), axis=1, kind="stable") + _row_offsets(s.shape)
    out.reshape(-1)[order.reshape(-1)] = _positions(s.shape)


def _row_offsets(shape: tuple[int, int]) -> np.ndarray:
    return (np.arange(shape[0], dtype=np.int64) * shape[1])[:, None]


def _positions(shape: tuple[int, int]) -> np.ndarray:
    return np.tile(np.arange(1, shape[1] + 1, dtype=np.int32), shape[0])


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
    w_ts = torch.empty(rank_t.shape, dtype=torch.float32, device=rank_t.device)
    w_st = torch.empty_like(w_ts)
    bd_weights_into(w_ts, w_st, rank_t, rank_s, ~unobserved, eps_t, eps_e, direction)
    return w_ts, w_st


def bd_weights_into(w_ts: torch.Tensor, w_st: torch.Tensor, rank_t: torch.Tensor, rank_s: torch.Tensor,
                    observed: torch.Tensor, eps_t: float, eps_e: float, direction: str = "paper") -> None:
    """`bd_weights` written into preallocated float32 tensors (e.g. rows of the CDF matrices): no temporaries
    beyond the rank difference."""
    if direction not in DIRECTIONS:
        raise ConfigError(f"bd_direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    diff = (rank_s - rank_t).float()                  # > 0: the teacher ranks the item higher (exact: |ranks| < 2^24)
    sign = -1.0 if direction == "released" else 1.0   # negating ε negates ε·diff exactly
    torch.mul(diff, sign * eps_t, out=w_ts).clamp_(min=0).tanh_().masked_fill_(observed, 0.0)
    torch.mul(diff, -sign * eps_e, out=w_st).clamp_(max=_EXP_CAP).exp_().masked_fill_(observed, 0.0)


class CdfSampler:
    """Samples with replacement from per-user weights via inverse CDF (same law as torch.multinomial).

    The cumulative sums are built once per rank refresh; each epoch then costs one binary search per draw,
    straight in the stored CDF rows (no copy of them). The weight tensor is turned into its cumulative sum
    in place to keep memory flat.
    """

    def __init__(self, weights: torch.Tensor, is_cdf: bool = False):
        if is_cdf:
            self.cdf = weights
        else:
            self.cdf = weights.cumsum_(dim=1) if weights.is_floating_point() else weights.float().cumsum(1)
        self.total = self.cdf[:, -1].clone()                            # [n_users]
        # r = u·total with u in [0, 1) can round up to total: capping r just below it keeps every draw at
        # or before the last item with positive weight (the first one whose cumulative sum is the total).
        self.r_max = torch.nextafter(self.total, torch.zeros_like(self.total))

    def sample(self, counts: torch.Tensor, generator: torch.Generator | None = None,
               block: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw counts[u] items for every user u with positive total weight.

        Returns CSR (indptr [n_users+1], items [Σ counts]); a user with all-zero weights gets none.
        """
        dev = self.cdf.device
        counts = torch.where(self.total > 0, counts.to(dev), torch.zeros_like(counts, device=dev))
        indptr = counts_to_indptr(counts)
        order = torch.argsort(counts)                       # blocks of users with similar counts: little padding
        order = order[counts[order] > 0]
        users, draws, where = [], [], []
        for lo in range(0, len(order), block):
            u = order[lo:lo + block]
            c = counts[u]
            m = int(c[-1])
            r = torch.rand((len(u), m), device=dev, generator=generator) * self.total[u, None]
            col = torch.arange(m, device=dev)[None, :]
            keep = col < c[:, None]
            users.append(u[:, None].expand(-1, m)[keep])
            draws.append(r[keep])
            where.append((indptr[u, None] + col)[keep])
        items = torch.empty(int(indptr[-1]), dtype=torch.long, device=dev)
        if users:
            u, r = torch.cat(users), torch.cat(draws)
            items[torch.cat(where)] = rows_searchsorted(self.cdf, u, torch.minimum(r, self.r_max[u]))
        return indptr, items


def rows_searchsorted(sorted_rows: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """searchsorted(sorted_rows[rows[j]], values[j], right=True) for every j, reading only the probed entries.

    The same result as `torch.searchsorted` on the gathered rows, without copying any row: a branchless
    binary search over the flat matrix, every query advancing by the same half-lengths.
    """
    n = sorted_rows.shape[1]
    flat = sorted_rows.reshape(-1)
    pos = rows * n                                    # absolute index of each query's current base
    length = n
    while length > 1:
        half = length // 2
        pos += (flat[pos + half] <= values) * half    # the first entry > value lies at or after base + half
        length -= half
    return pos + (flat[pos] <= values) - rows * n


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
