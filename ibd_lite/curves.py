"""Learning curves from the runs' histories, and when they plateau: the evidence that a budget is long enough.

A run's `history` holds one entry per epoch; every `eval_every` epochs an entry carries "valid"
({role: {"H@50": ..., "N@50": ...}}). The Teacher and Student rows (methods `teacher`, `student`) also
hold their warm-up (phases "pretrain teacher" / "pretrain student"); RD, CD, BD and iBD start from that
same warm-up, so `table_curves` puts the warm-up curve in front of each of their rows.

Plateau (`plateau_epoch`): with the running best b_i = max(v_1, ..., v_i) over the evaluated epochs
e_1 < ... < e_n, the plateau epoch is the first e_i with b_n <= (1 + tol) * b_i, i.e. after e_i the
running best never rises by more than `tol` (relative) any more. Still rising (`tail_gain`): the
running best at the end against the running best at the last evaluation at or before (1 - tail) * e_n
(the start of the last `tail` share of the budget, which starts at epoch 0) gains more than `tol`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from .errors import ConfigError
from .experiments import TABLE_ROWS

CURVE_COLUMNS = ("row", "role", "phase", "epoch")


def history_frame(result: dict, role: str, part: str = "valid") -> pd.DataFrame:
    """One line per evaluated epoch of one model of a run: epoch, phase and its `part` metrics."""
    recs = [{"epoch": int(e["epoch"]), "phase": e.get("phase", ""), **e[part][role]}
            for e in result.get("history", []) if role in (e.get(part) or {})]
    if not recs:
        raise ConfigError(f"the {result.get('config', {}).get('method', '?')} run has no {part} metrics for "
                          f"model {role!r} in its history; use a role the run trained "
                          f"({', '.join(result.get('models', {})) or 'none'})")
    return pd.DataFrame(recs)


def _warmup_report(result: dict, role: str) -> dict:
    rep = result.get("pretrain", {}).get(role, {})
    return {k: rep.get(k) for k in ("best_epoch", "valid_best", "epochs_run")}


def table_curves(results: Sequence[dict], part: str = "valid",
                 rows: Sequence[tuple[str, str, str]] = TABLE_ROWS) -> pd.DataFrame:
    """Learning curves of the table rows (Teacher, Student, RD, ...) from the runs of ONE seed, warm-up
    included: columns row, role, phase, epoch and the metrics; rows without a run are left out.

    A row whose run does not hold its warm-up borrows it from a run of the same seed that does (Teacher
    or Student alone); the two runs' warm-up reports must agree, else ConfigError.
    """
    if not results:
        raise ConfigError("no runs given: pass the results of one seed, e.g. ch.comparison([0]) or ch.runs(...)")
    seeds = sorted({r["config"]["seed"] for r in results})
    if len(seeds) > 1:
        raise ConfigError(f"learning curves are per seed, got runs of seeds {seeds}: pass the runs of one seed")
    by_method = {r["config"]["method"]: r for r in results}
    frames = []
    for label, method, role in rows:
        if method not in by_method:
            continue
        run = by_method[method]
        own = history_frame(run, role, part)
        warm = own[own["phase"] == f"pretrain {role}"]
        if warm.empty:
            warm = _borrowed_warmup(run, role, list(by_method.values()), part)
        rest = own[~own["epoch"].isin(warm["epoch"])]
        frames.append(pd.concat([warm, rest]).sort_values("epoch", kind="stable").assign(row=label, role=role))
    if not frames:
        raise ConfigError(f"none of the runs ({', '.join(by_method)}) is a table row "
                          f"({', '.join(sorted({m for _, m, _ in rows}))})")
    out = pd.concat(frames, ignore_index=True)
    metrics = [c for c in out.columns if c not in CURVE_COLUMNS]
    return out[list(CURVE_COLUMNS) + metrics]


def _borrowed_warmup(run: dict, role: str, runs: list[dict], part: str) -> pd.DataFrame:
    """The warm-up curve of `role` from another run of the same seed whose warm-up report matches."""
    phase = f"pretrain {role}"
    for donor in runs:
        if donor is run or not any(e.get("phase") == phase for e in donor.get("history", [])):
            continue
        if _warmup_report(donor, role) != _warmup_report(run, role):
            raise ConfigError(f"the {run['config']['method']} run and the {donor['config']['method']} run report "
                              f"different {role} warm-ups ({_warmup_report(run, role)} vs "
                              f"{_warmup_report(donor, role)}): their curves cannot be joined; rerun them with "
                              "the same code and config")
        frame = history_frame(donor, role, part)
        return frame[frame["phase"] == phase]
    return pd.DataFrame(columns=["epoch", "phase"])


def _checked(epochs: Sequence[float], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    e, v = np.asarray(epochs, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if e.ndim != 1 or e.shape != v.shape:
        raise ConfigError(f"epochs and values must be two 1-d sequences of one length, got shapes {e.shape} "
                          f"and {v.shape}")
    if len(e) == 0:
        raise ConfigError("empty learning curve: no evaluated epoch (was the run validated? check eval_every)")
    if not (np.isfinite(v).all() and np.isfinite(e).all()):
        raise ConfigError("the learning curve holds a NaN or infinite value: drop those evaluations first")
    if (v < 0).any():
        raise ConfigError("a relative plateau needs non-negative values (metrics such as H@50, N@50)")
    if (np.diff(e) <= 0).any():
        raise ConfigError("the epochs of a learning curve must be strictly increasing: sort the curve by epoch")
    return e, v


def plateau_epoch(epochs: Sequence[float], values: Sequence[float], tol: float = 0.01) -> int:
    """The first evaluated epoch after which the running best never rises by more than `tol` (relative):
    the first e_i whose running best b_i satisfies max(values) <= (1 + tol) * b_i."""
    e, v = _checked(epochs, values)
    best = np.maximum.accumulate(v)
    return int(e[np.argmax(best[-1] <= (1.0 + tol) * best)])


def tail_gain(epochs: Sequence[float], values: Sequence[float], tail: float = 0.2) -> float:
    """Relative gain of the running best over the last `tail` share of the budget (epochs 0..last):
    b_end / b_cut - 1, b_cut the running best at the last evaluation at or before (1 - tail) * last epoch
    (the first value when none is that early); 0 when b_cut is 0 and nothing was gained."""
    if not 0.0 < tail < 1.0:
        raise ConfigError(f"tail must be a share of the budget in (0, 1), got {tail}")
    e, v = _checked(epochs, values)
    best = np.maximum.accumulate(v)
    before = np.flatnonzero(e <= (1.0 - tail) * e[-1])
    b_cut = best[before[-1]] if len(before) else v[0]
    if b_cut == 0.0:
        return 0.0 if best[-1] == 0.0 else float("inf")
    return float(best[-1] / b_cut - 1.0)


def curve_summary(epochs: Sequence[float], values: Sequence[float], tol: float = 0.01,
                  tail: float = 0.2) -> dict[str, Any]:
    """Plateau epoch, best epoch (first maximum), best value, last-`tail` gain and the still-rising flag
    (gain > tol) of one learning curve."""
    e, v = _checked(epochs, values)
    gain = tail_gain(e, v, tail)
    return {"plateau epoch": plateau_epoch(e, v, tol), "best epoch": int(e[np.argmax(v)]), "best": float(v.max()),
            "last epoch": int(e[-1]), "tail gain %": 100.0 * gain, "still rising": bool(gain > tol)}


def plateau_table(curves: pd.DataFrame, metric: str = "N@50", tol: float = 0.01, tail: float = 0.2) -> pd.DataFrame:
    """`curve_summary` of every row of a `table_curves` frame on one metric, in the frame's row order."""
    if metric not in curves.columns:
        raise ConfigError(f"no metric {metric!r} in the curves; have "
                          f"{', '.join(c for c in curves.columns if c not in CURVE_COLUMNS)}")
    order = list(dict.fromkeys(curves["row"]))
    recs = {row: curve_summary(g["epoch"], g[metric], tol, tail) for row, g in curves.groupby("row", sort=False)}
    out = pd.DataFrame.from_dict(recs, orient="index").loc[order]
    out.index.name = "row"
    return out


def plateau_sentence(table: pd.DataFrame, metric: str = "N@50", tol: float = 0.01, tail: float = 0.2) -> str:
    """The chapter's sentence on a `plateau_table`: every row plateaued within the budget, or which rows were
    still rising at its end and by how much (words chosen from the numbers, never assumed)."""
    if table.empty:
        raise ConfigError("no rows in the plateau table: compute it with plateau_table(table_curves(runs))")
    rising = table[table["still rising"]]
    settled = table[~table["still rising"]]
    if rising.empty:
        last = table["plateau epoch"].idxmax()
        return (f"every model's validation {metric} stopped improving by more than {tol:.0%} by epoch "
                f"{int(table['plateau epoch'].max()):,} (the last to settle: {last})")
    gains = ", ".join(f"{row} {g:+.1f} %" for row, g in rising["tail gain %"].items())
    who = ("every model was" if settled.empty else
           f"{_join(list(rising.index))} {'was' if len(rising) == 1 else 'were'}")
    text = (f"{who} still rising at the end of the budget (gain of the best validation {metric} over "
            f"the last {tail:.0%} of the budget: {gains})")
    if not settled.empty:
        text += (f"; {'the other model' if len(settled) == 1 else 'the other models'} stopped improving by "
                 f"more than {tol:.0%} by epoch {int(settled['plateau epoch'].max()):,}")
    return text


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
