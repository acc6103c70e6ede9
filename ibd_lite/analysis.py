"""Measurements the chapters use to explain results (not part of training).

`distilled_pairs` draws one epoch of BD distillation pairs from two models and returns, per pair, both
models' ranks, the receiver's own probability σ(s_recv) and the soft label σ(s_giver / τ) it is trained
towards. It shows, for instance, what the student's temperature-softened labels ask of the teacher on
items the teacher ranks low.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .bd import refresh
from .models import Recommender, eval_mode
from .sparse import indptr_to_rows

RANK_BINS = (0, 100, 1_000, 10_000, np.inf)


@torch.no_grad()
def distilled_pairs(teacher: Recommender, student: Recommender, split, *, eps_t: float, eps_e: float, tau: float,
                    kd_per_pos: int = 5, direction: str = "st", bd_direction: str = "paper",
                    top_n: int = 100, seed: int = 0) -> pd.DataFrame:
    """One epoch's pairs of a BD direction ("st": the teacher receives, "ts": the student receives).

    Columns: user, item, rank_T, rank_S (1 = top unobserved), p_receiver = σ(s_receiver), target = σ(s_giver/τ).
    """
    device = next(teacher.parameters()).device
    kw = dict(eps_t=eps_t, eps_e=eps_e, direction=bd_direction, top_n=top_n, device=device)
    r = refresh(teacher, student, split, **kw)
    torch.manual_seed(seed)
    indptr, items = r.samplers[direction].sample(kd_per_pos * split.train_counts.to(device))
    users = indptr_to_rows(indptr)
    q = refresh(teacher, student, split, queries={direction: (users, items)}, **kw).query_ranks[direction]
    receiver, giver = (teacher, student) if direction == "st" else (student, teacher)
    with eval_mode(teacher, student):
        p_recv = torch.sigmoid(receiver.pair_logits(users, items))
        target = torch.sigmoid(giver.pair_logits(users, items) / tau)
    return pd.DataFrame({"user": users.cpu().numpy(), "item": items.cpu().numpy(),
                         "rank_T": q[0].cpu().numpy(), "rank_S": q[1].cpu().numpy(),
                         "p_receiver": p_recv.cpu().numpy(), "target": target.cpu().numpy()})


def label_push(pairs: pd.DataFrame, rank_col: str = "rank_T") -> pd.DataFrame:
    """Per rank band of the receiver: share of pairs, mean σ(s_recv), mean soft label, and the share of pairs
    whose label is above the receiver's own probability (the KD loss pushes those scores up)."""
    bands = pd.cut(pairs[rank_col], RANK_BINS, right=True,
                   labels=["1–100", "101–1,000", "1,001–10,000", "> 10,000"])
    g = pairs.assign(band=bands, up=pairs["target"] > pairs["p_receiver"]).groupby("band", observed=False)
    out = pd.DataFrame({"pairs (%)": 100 * g.size() / len(pairs), "receiver σ(s)": g["p_receiver"].mean(),
                        "soft label": g["target"].mean(), "label above (%)": 100 * g["up"].mean()})
    out.index.name = f"receiver's rank ({rank_col})"
    return out
