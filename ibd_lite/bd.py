"""Bidirectional distillation (SPEC §5) and iBD's feedback re-distillation (SPEC §6, reconstruction).

A *refresh* recomputes both models' rank matrices chunk by chunk, turning them straight into the two
directions' sampling CDFs, so the full int32 rank matrices never sit in memory at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .models import Recommender, eval_mode
from .sampling import CdfSampler, bd_weights_into, ranks_from_scores
from .sparse import counts_to_indptr, indptr_to_rows

DIRS = ("ts", "st")   # T→S: the student receives; S→T: the teacher receives
# Largest ε for which a refresh ranks 16-bit quantised scores: a rank off by k positions changes a weight
# by a factor within exp(±2εk), and tests/test_bd_speed.py bounds the total-variation distance on real data.
APPROX_EPS_MAX = 1e-3


@dataclass
class Refresh:
    """What one rank refresh produces: a sampler per direction, top-N overlap, and looked-up ranks."""

    samplers: dict[str, CdfSampler]
    overlap: torch.Tensor                                  # [n_users] |top-N_T ∩ top-N_S| / N
    top_lists: dict[str, torch.Tensor] = field(default_factory=dict)   # "T"/"S" -> [n_users, N]
    query_ranks: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # dir -> (rank_T, rank_S)


@torch.no_grad()
def refresh(teacher: Recommender, student: Recommender, split, *, eps_t: float, eps_e: float,
            direction: str, top_n: int, device, queries: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
            keep_lists: bool = False, batch_users: int = 256, exact: bool | None = None) -> Refresh:
    """Ranks of both models for every user (1 = top unobserved item) -> BD samplers and iBD look-ups.

    `queries` maps a direction to (users, items) pairs, sorted by user, whose teacher and student
    ranks are needed (iBD's feedback check). `exact=None` ranks exactly only when some ε exceeds
    `APPROX_EPS_MAX` (see `ranks_from_scores(exact=False)`; the query ranks and top-N lists come from
    the same ranks).
    """
    if exact is None:
        exact = max(eps_t, eps_e) > APPROX_EPS_MAX
    n_u, n_i = split.n_users, split.n_items
    cdf = {d: torch.empty((n_u, n_i), dtype=torch.float32, device=device) for d in DIRS}
    overlap = torch.empty(n_u, device=device)
    lists = {m: torch.empty((n_u, top_n), dtype=torch.long, device=device) for m in ("T", "S")} if keep_lists else {}
    queries = queries or {}
    q_out = {d: (torch.empty(len(u), dtype=torch.int32, device=device),
                 torch.empty(len(u), dtype=torch.int32, device=device)) for d, (u, _) in queries.items()}
    n = min(top_n, n_i)
    with eval_mode(teacher, student):
        for lo in range(0, n_u, batch_users):
            users = torch.arange(lo, min(lo + batch_users, n_u), device=device)
            hi = lo + len(users)
            observed = split.train_mask(users.cpu()).to(device)
            r_t = ranks_from_scores(teacher.score_all(users), observed, exact=exact).to(device)   # [b, n_items]
            r_s = ranks_from_scores(student.score_all(users), observed, exact=exact).to(device)
            bd_weights_into(cdf["ts"][lo:hi], cdf["st"][lo:hi], r_t, r_s, observed, eps_t, eps_e, direction)
            cdf["ts"][lo:hi].cumsum_(1)
            cdf["st"][lo:hi].cumsum_(1)
            overlap[lo:hi] = ((r_t <= n) & (r_s <= n)).sum(1).float() / n
            if keep_lists:
                lists["T"][lo:hi] = torch.topk(-r_t, n, dim=1).indices
                lists["S"][lo:hi] = torch.topk(-r_s, n, dim=1).indices
            for d, (qu, qi) in queries.items():
                a, b = torch.searchsorted(qu, torch.tensor([lo, hi], device=qu.device)).tolist()
                if b > a:
                    rows = qu[a:b] - lo
                    q_out[d][0][a:b] = r_t[rows, qi[a:b]]
                    q_out[d][1][a:b] = r_s[rows, qi[a:b]]
    samplers = {d: CdfSampler(cdf[d], is_cdf=True) for d in DIRS}
    return Refresh(samplers, overlap, lists, q_out)


@dataclass
class RoundSet:
    """One direction's distillation set for a round: pairs grouped by user, with carry-over streaks."""

    users: torch.Tensor     # [m] sorted
    items: torch.Tensor     # [m]
    streak: torch.Tensor    # [m] rounds this item has been carried over uncorrected (0 = fresh)

    def indptr(self, n_users: int) -> torch.Tensor:
        return counts_to_indptr(torch.bincount(self.users, minlength=n_users))


def feedback(prev: RoundSet, rank_giver: torch.Tensor, rank_receiver: torch.Tensor, retire_after: int,
             n_items: int) -> dict[str, torch.Tensor]:
    """iBD's feedback check on last round's distinct distilled items of one direction.

    An item is corrected when the receiver now ranks it at least as high as the giver
    (rank_receiver ≤ rank_giver). Uncorrected (noise) items are carried over unless they were already
    re-distilled `retire_after` rounds in a row, in which case they are retired.
    Returns masks over the distinct pairs and the pairs themselves (users, items, streak).
    """
    key = prev.users * n_items + prev.items
    uniq, inv = torch.unique(key, return_inverse=True)              # sorted by user, then item
    streak = torch.zeros(len(uniq), dtype=prev.streak.dtype, device=key.device).scatter_reduce_(
        0, inv, prev.streak, reduce="amax", include_self=False)
    first = torch.full((len(uniq),), len(key), dtype=torch.long, device=key.device).scatter_reduce_(
        0, inv, torch.arange(len(key), device=key.device), reduce="amin", include_self=True)
    rg = torch.zeros(len(uniq), dtype=rank_giver.dtype, device=key.device).scatter_(0, inv, rank_giver)
    rr = torch.zeros(len(uniq), dtype=rank_receiver.dtype, device=key.device).scatter_(0, inv, rank_receiver)
    corrected = rr <= rg
    noise = ~corrected
    retired = noise & (streak >= retire_after)
    carry = noise & ~retired
    return {"users": uniq // n_items, "items": uniq % n_items, "streak": streak, "first": first,
            "corrected": corrected, "noise": noise, "retired": retired, "carry": carry}


def build_round_set(carried_users: torch.Tensor, carried_items: torch.Tensor, carried_streak: torch.Tensor,
                    order: torch.Tensor, n_u: torch.Tensor, sampler: CdfSampler) -> tuple[RoundSet, torch.Tensor]:
    """Noise items first (in last round's order, at most n_u per user), topped up with fresh samples.

    Returns the set and the number of carried items kept per user.
    """
    n_users = len(n_u)
    # keep each user's carried items in last round's order, then cap at n_u
    idx = torch.argsort(carried_users * (order.max() + 1 if len(order) else 1) + order)
    cu, ci, cs = carried_users[idx], carried_items[idx], carried_streak[idx]
    counts = torch.bincount(cu, minlength=n_users)
    start = counts_to_indptr(counts)[:-1]
    pos = torch.arange(len(cu), device=cu.device) - start[cu]
    keep = pos < n_u[cu]
    cu, ci, cs = cu[keep], ci[keep], cs[keep] + 1
    kept = torch.bincount(cu, minlength=n_users)
    indptr, fresh = sampler.sample(n_u - kept)
    fu = indptr_to_rows(indptr)
    users = torch.cat([cu, fu])
    items = torch.cat([ci, fresh])
    streak = torch.cat([cs, torch.zeros_like(fresh)])
    o = torch.sort(users, stable=True).indices                        # group by user, carried first
    return RoundSet(users[o], items[o], streak[o]), kept
