"""Measurements the chapters use to explain results (not part of training).

`distilled_pairs` draws one epoch of BD distillation pairs from two models and returns, per pair, both
models' ranks, the receiver's own probability σ(s_recv), the giver's unsoftened probability σ(s_giver), the
soft label σ(s_giver / τ) the receiver is trained towards, and the receiver's probability at its own k-th
item. `label_push` summarises them per rank band of the receiver: it shows, for instance, what the
student's temperature-softened labels ask of the teacher on items the teacher ranks low.

`valid_curve`, `list_overlap`, `result_rows` and `paired_frame` read finished results: a model's validation
curve with the warm-up as epoch 0, iBD's per-round top-N list overlap and stability, rows for
`ibd_lite.report.compare` built from any runs, and paired tests with numeric interval bounds for plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from .bd import refresh
from .codec import decode
from .models import Recommender, eval_mode
from .sparse import indptr_to_rows

RANK_BINS = (0, 50, 1_000, 10_000, np.inf)           # 1–50: what H@50 counts
BAND_LABELS = ("1–50", "51–1,000", "1,001–10,000", "> 10,000")


@torch.no_grad()
def kth_logit(model: Recommender, split, k: int, batch_users: int = 256) -> torch.Tensor:
    """Per user [n_users], the logit of the model's k-th highest-scored unobserved item: the score an
    item must beat to enter the model's top k (k is capped at the user's number of unobserved items)."""
    device = next(model.parameters()).device
    k = min(k, split.n_items)
    out = torch.empty(split.n_users, device=device)
    with eval_mode(model):
        for lo in range(0, split.n_users, batch_users):
            users = torch.arange(lo, min(lo + batch_users, split.n_users), device=device)
            scores = model.score_all(users).masked_fill(split.train_mask(users.cpu()).to(device), float("-inf"))
            top = torch.topk(scores, k, dim=1).values                                  # [b, k], descending
            finite = torch.isfinite(top).sum(1).clamp(min=1)                           # users with < k unobserved
            out[lo:lo + len(users)] = top.gather(1, (finite - 1).unsqueeze(1)).squeeze(1)
    return out


@torch.no_grad()
def distilled_pairs(teacher: Recommender, student: Recommender, split, *, eps_t: float, eps_e: float,
                    tau: float, kd_per_pos: int = 5, direction: str = "st", bd_direction: str = "paper",
                    top_n: int = 100, seed: int = 0, k: int = 50) -> pd.DataFrame:
    """One epoch's pairs of a BD direction ("st": the teacher receives, "ts": the student receives).

    Columns: user, item, rank_T, rank_S (1 = top unobserved), p_receiver = σ(s_receiver),
    p_giver = σ(s_giver) (τ = 1), target = σ(s_giver/τ), p_receiver_k = σ of the receiver's own k-th
    item for that user (a label above it would, if fitted exactly, put the item in the receiver's top k).
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
        giver_logits = giver.pair_logits(users, items)
    p_k = torch.sigmoid(kth_logit(receiver, split, k)[users])
    out = pd.DataFrame({"user": users.cpu().numpy(), "item": items.cpu().numpy(),
                        "rank_T": q[0].cpu().numpy(), "rank_S": q[1].cpu().numpy(),
                        "p_receiver": p_recv.cpu().numpy(), "p_giver": torch.sigmoid(giver_logits).cpu().numpy(),
                        "target": torch.sigmoid(giver_logits / tau).cpu().numpy(),
                        "p_receiver_k": p_k.cpu().numpy()})
    out.attrs["k"] = k
    return out


def label_push(pairs: pd.DataFrame, rank_col: str = "rank_T") -> pd.DataFrame:
    """Per rank band of the receiver: share of pairs, mean σ(s_recv), mean giver σ(s) at τ = 1 (when
    recorded), mean soft label, share of labels above the receiver's own probability (the KD loss pushes
    those scores up), mean push label − σ(s_recv) (minus the gradient of the BCE on the logit), the band's
    share of all upward push, and the share of labels above the receiver's k-th item (when recorded).
    Bands without pairs are left out."""
    push = pairs["target"] - pairs["p_receiver"]
    f = pairs.assign(band=pd.cut(pairs[rank_col], RANK_BINS, right=True, labels=list(BAND_LABELS)),
                     up=push > 0, push=push, up_push=push.clip(lower=0))
    if "p_receiver_k" in pairs:
        f["above_k"] = pairs["target"] > pairs["p_receiver_k"]
    g = f.groupby("band", observed=False)
    out = pd.DataFrame({"pairs (%)": 100 * g.size() / len(pairs), "receiver σ(s)": g["p_receiver"].mean()})
    if "p_giver" in pairs:
        out["giver σ(s), τ = 1"] = g["p_giver"].mean()
    out["soft label"] = g["target"].mean()
    out["label above (%)"] = 100 * g["up"].mean()
    out["mean push"] = g["push"].mean()
    total_up = float(f["up_push"].sum())
    out["upward push (%)"] = 100 * g["up_push"].sum() / total_up if total_up > 0 else 0.0
    if "above_k" in f:
        out[f"label above #{pairs.attrs.get('k', 'k')} (%)"] = 100 * g["above_k"].mean()
    out = out[out["pairs (%)"] > 0]
    out.index = pd.Index(out.index.astype(str), name=f"receiver's rank ({rank_col})")
    return out


# ------------------------------------------------------------------------------- reading finished results
def valid_curve(result: dict, role: str, metric: str = "N@50") -> pd.DataFrame:
    """A model's validation metric at every evaluation after the warm-up; epoch 0 is the warm-up
    checkpoint (its best validation N@50, the only warm-up value a result keeps). Columns: epoch, metric."""
    pre = result["pretrain"][role]
    offset = int(pre["epochs_run"])
    recs = [{"epoch": e["epoch"] - offset, metric: e["valid"][role][metric]} for e in result["history"]
            if not e["phase"].startswith("pretrain") and role in e.get("valid", {})]
    if metric in pre.get("valid_best", {}):
        recs.insert(0, {"epoch": 0, metric: pre["valid_best"][metric]})
    return pd.DataFrame(recs, columns=["epoch", metric])


def list_overlap(result: dict) -> pd.DataFrame:
    """iBD's recommendation-list matrices per round, as shares of N (means over users): the overlap of the
    teacher's and the student's top-N lists, and each model's list stability (the share of last round's
    top-N list still in this round's). Columns: round, measure, share."""
    n = min(result["config"]["top_n"], result["dataset"]["items"])
    recs = []
    for e in result.get("rounds", []):
        recs.append({"round": e["round"], "measure": "teacher–student overlap", "share": e["overlap@N"]})
        for m, who in (("T", "teacher"), ("S", "student")):
            if f"list_stability_{m}" in e:
                kept = decode(e[f"list_stability_{m}"])
                recs.append({"round": e["round"], "measure": f"{who} list kept", "share": float(kept.mean()) / n})
    return pd.DataFrame(recs, columns=["round", "measure", "share"])


def result_rows(out_dir: "str | Path", rows: dict[str, tuple[Iterable[dict], str]]) -> dict[str, list]:
    """Rows for `ibd_lite.report.compare` / `summary` from finished results: {label: (results, role)} ->
    {label: [(Run, role), ...] sorted by seed}."""
    from .experiments import run_name
    from .report import Run

    return {label: sorted(((Run(Path(out_dir) / run_name(r["config"]), r), role) for r in results),
                          key=lambda x: x[0].config["seed"]) for label, (results, role) in rows.items()}


def paired_frame(rows: dict[str, list], pairs: Sequence[tuple[str, str]], metrics: Sequence[str] = ("H@50",),
                 n_boot: int = 10_000) -> pd.DataFrame:
    """Paired tests B − A of any rows (e.g. an ablation's; `report.comparisons` with the pairs first)."""
    from .report import comparisons

    return comparisons(rows, metrics=metrics, pairs=pairs, n_boot=n_boot)
