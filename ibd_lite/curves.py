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


def warmup_report(result: dict, role: str) -> dict:
    """What identifies a run's warm-up of `role` (best epoch, its validation metrics, epochs run), without the
    timings: two runs that report the same continued from the same warm-up."""
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
        if warmup_report(donor, role) != warmup_report(run, role):
            raise ConfigError(f"the {run['config']['method']} run and the {donor['config']['method']} run report "
                              f"different {role} warm-ups ({warmup_report(run, role)} vs "
                              f"{warmup_report(donor, role)}): their curves cannot be joined; rerun them with "
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


# ------------------------------------------------------------------------------------------ beyond the budget
def log_trend(epochs: Sequence[float], values: Sequence[float], since: float = 0.5, tol: float = 0.01,
              tail: float = 0.2) -> dict[str, float]:
    """Least-squares fit best(e) = a + b ln(e) of the running best over the evaluations from `since` x the last
    epoch on. A curve that creeps up like a logarithm gains b ln 2 per doubling of the budget, and its tail gain
    b ln(1 / (1 - tail)) / best(T) falls below `tol` only at T* = exp((b ln(1 / (1 - tail)) / tol - a) / b):
    the budget the plateau rule would need if the trend held (the last epoch when it already holds)."""
    if not 0.0 < since < 1.0:
        raise ConfigError(f"since must be a share of the budget in (0, 1), got {since}")
    e, v = _checked(epochs, values)
    keep = e >= since * e[-1]
    if keep.sum() < 3 or e[keep][0] <= 0:
        raise ConfigError(f"a trend needs at least 3 evaluations after epoch 0 in the last {1 - since:.0%} of the "
                          f"budget, got {int(keep.sum())}: validate more often (eval_every) or lower since")
    best = np.maximum.accumulate(v)
    b, a = np.polyfit(np.log(e[keep]), best[keep], 1)
    if b <= 0:                         # a running best never falls: only rounding makes the slope negative
        b, a = 0.0, float(best[keep].mean())
    span = -np.log(1.0 - tail)
    level = a + b * np.log(e[-1])
    settles = float(e[-1]) if b <= 0 or b * span <= tol * level else float(np.exp((b * span / tol - a) / b))
    per = b * np.log(2.0)
    return {"intercept": float(a), "slope": float(b), "gain per doubling": float(per),
            "gain per doubling %": 100.0 * per / best[-1] if best[-1] > 0 else 0.0, "budget for the rule": settles}


def predicted_best(trend: dict[str, float], epoch: float) -> float:
    """The running best a `log_trend` expects at `epoch`."""
    return trend["intercept"] + trend["slope"] * float(np.log(epoch))


def trend_table(curves: pd.DataFrame, metric: str = "N@50", since: float = 0.5, tol: float = 0.01,
                tail: float = 0.2) -> pd.DataFrame:
    """`log_trend` of every row of a `table_curves` frame (with its role), and the rule's budget as a multiple
    of the budget run ("x budget")."""
    recs = {}
    for row, g in curves.groupby("row", sort=False):
        t = log_trend(g["epoch"], g[metric], since, tol, tail)
        recs[row] = dict(t, role=g["role"].iloc[0], **{"x budget": t["budget for the rule"] / float(g["epoch"].max())})
    out = pd.DataFrame.from_dict(recs, orient="index")
    out.index.name = "row"
    return out


def total_epochs(config: dict[str, Any]) -> int:
    """A run's whole budget: warm-up plus the epochs after it (its last evaluated epoch)."""
    return int(config["pretrain_epochs"] + config["epochs"])


def probe_label(config: dict[str, Any], base: dict[str, Any], role: str = "student") -> str:
    """What a probe run changed against the table run `base`: its total epochs and / or its learning rate."""
    parts = []
    total, base_total = total_epochs(config), total_epochs(base)
    if total != base_total:
        parts.append(f"{total:,} epochs ({total / base_total:g}x)")
    lr, base_lr = config[f"lr_{role}"], base[f"lr_{role}"]
    if lr != base_lr:
        parts.append(f"lr {lr:g} ({lr / base_lr:g}x)")
    return ", ".join(parts) or "same as the table run"


def budget_probes(base_runs: Sequence[dict], probe_runs: Sequence[dict], role: str = "student",
                  metric: str = "N@50", tol: float = 0.01, tail: float = 0.2, n_boot: int = 10_000) -> pd.DataFrame:
    """The table run of `role` trained alone against its budget probes (more epochs, larger steps), on the
    seeds both have: best validation `metric`, its epoch, the last-`tail` gain, test H@50, and the probe's
    paired test H@50 difference to the table run (bootstrap over users, seeds pooled). One line per setting,
    the table run first; values are means over the seeds."""
    from .codec import decode
    from .stats import paired_difference

    base_by_seed = {r["config"]["seed"]: r for r in base_runs}
    if not base_by_seed:
        raise ConfigError("no table run given: pass the runs of the model trained alone, e.g. ch.runs(...)")
    groups: dict[str, list[dict]] = {}
    for label, r, _ in _paired(base_runs, probe_runs, role):
        groups.setdefault(label, []).append(r)
    if not groups:
        raise ConfigError(f"no probe run shares a seed with the table runs (seeds {sorted(base_by_seed)}): "
                          "run `python -m ibd_lite grid budget` on those seeds")
    recs = {}
    for label, runs in [("table run", None), *groups.items()]:
        seeds = sorted(r["config"]["seed"] for r in runs) if runs else sorted(base_by_seed)
        mine = runs or [base_by_seed[s] for s in seeds]
        summaries = [curve_summary(*_curve(r, role, metric), tol, tail) for r in mine]
        rec = {"seeds": len(seeds), "epochs": total_epochs(mine[0]["config"]),
               "lr": mine[0]["config"][f"lr_{role}"], f"best valid {metric}": np.mean([s["best"] for s in summaries]),
               "best epoch": np.mean([s["best epoch"] for s in summaries]),
               "plateau epoch": np.mean([s["plateau epoch"] for s in summaries]),
               "tail gain %": np.mean([s["tail gain %"] for s in summaries]),
               "still rising": sum(s["still rising"] for s in summaries),
               "test H@50": np.mean([r["models"][role]["test"]["H@50"] for r in mine])}
        if runs:
            mine_by_seed = {r["config"]["seed"]: r for r in runs}
            d = paired_difference([decode(base_by_seed[s]["models"][role]["ranks"]["test"]) for s in seeds],
                                  [decode(mine_by_seed[s]["models"][role]["ranks"]["test"]) for s in seeds],
                                  "H@50", n_boot=n_boot)
            rec.update({"test H@50 change": d["mean"], "lo": d["lo"], "hi": d["hi"], "change %": d["rel_pct"]})
        recs[label] = rec
    out = pd.DataFrame.from_dict(recs, orient="index")
    out.index.name = role
    return out


def probe_predictions(base_runs: Sequence[dict], probe_runs: Sequence[dict], role: str = "student",
                      metric: str = "N@50", since: float = 0.5) -> dict[str, float]:
    """What the table runs' `log_trend`s predicted for the probes that only trained longer: {probe label: the
    running best expected at the probe's last epoch, mean over the probe's seeds}."""
    preds: dict[str, list[float]] = {}
    for label, r, base in _paired(base_runs, probe_runs, role):
        if _longer(r["config"], base):
            trend = log_trend(*_curve(base, role, metric), since=since)
            preds.setdefault(label, []).append(predicted_best(trend, total_epochs(r["config"])))
    return {label: float(np.mean(v)) for label, v in preds.items()}


def _paired(base_runs: Sequence[dict], probe_runs: Sequence[dict], role: str) -> list[tuple[str, dict, dict]]:
    """(probe label, probe run, table run of its seed) for every probe whose seed has a table run."""
    base_by_seed = {r["config"]["seed"]: r for r in base_runs}
    return [(probe_label(r["config"], base_by_seed[r["config"]["seed"]]["config"], role), r,
             base_by_seed[r["config"]["seed"]]) for r in probe_runs if r["config"]["seed"] in base_by_seed]


def _curve(result: dict, role: str, metric: str) -> tuple[pd.Series, pd.Series]:
    h = history_frame(result, role)
    return h["epoch"], h[metric]


def _longer_rows(table_runs: Sequence[dict], probe_runs: Sequence[dict]) -> dict[str, tuple[str, dict, dict]]:
    """{row label: (role, {seed: table run}, {seed: probe run})} for every table row (TABLE_ROWS) with a probe
    that trained its method longer at the table run's learning rates, on the seeds that have both."""
    out = {}
    for label, method, role in TABLE_ROWS:
        base = {r["config"]["seed"]: r for r in table_runs if r["config"]["method"] == method}
        longer = {r["config"]["seed"]: r for r in probe_runs
                  if r["config"]["method"] == method and _longer(r["config"], base.get(r["config"]["seed"]))}
        if longer:
            out[label] = (role, {s: base[s] for s in sorted(longer)}, {s: longer[s] for s in sorted(longer)})
    return out


def _longer(config: dict[str, Any], base: "dict | None") -> bool:
    """Whether a probe's config trained longer than the table run `base` at the same learning rates."""
    return base is not None and total_epochs(config) > total_epochs(base["config"]) and all(
        config.get(k) == base["config"].get(k) for k in ("lr_teacher", "lr_student"))


def longer_budget_table(table_runs: Sequence[dict], probe_runs: Sequence[dict], metric: str = "N@50",
                        tol: float = 0.01, tail: float = 0.2, n_boot: int = 10_000) -> pd.DataFrame:
    """Each table row that a probe trained longer (same warm-up and learning rates: the `budget` and
    `budget-distill` probes), against its table run on the same seeds: best validation `metric` at both budgets,
    whether the longer run still rose at its end, its plateau epoch, and the paired test H@50 change (bootstrap
    over users, seeds pooled). Values are means over the seeds; one line per row, in table order."""
    recs = {}
    for label, (role, base, longer) in _longer_rows(table_runs, probe_runs).items():
        t = budget_probes(list(base.values()), list(longer.values()), role, metric, tol, tail, n_boot)
        one, two = t.loc["table run"], t.drop(index="table run").iloc[0]
        recs[label] = {"seeds": len(longer), "epochs": int(one["epochs"]), "longer epochs": int(two["epochs"]),
                       f"best valid {metric}": one[f"best valid {metric}"],
                       f"longer best valid {metric}": two[f"best valid {metric}"],
                       "valid change %": 100 * (two[f"best valid {metric}"] / one[f"best valid {metric}"] - 1),
                       "still rising": int(two["still rising"]), "plateau epoch": two["plateau epoch"],
                       "test H@50": one["test H@50"], "longer test H@50": two["test H@50"],
                       **{k: two[k] for k in ("test H@50 change", "lo", "hi", "change %")}}
    if not recs:
        raise ConfigError("no probe trained a table row longer on a seed of the given table runs: run `python -m "
                          "ibd_lite grid budget` (student alone) or `grid budget-distill` (RD, CD, BD, iBD)")
    out = pd.DataFrame.from_dict(recs, orient="index")
    out.index.name = "row"
    return out


def longer_budget_gaps(table_runs: Sequence[dict], probe_runs: Sequence[dict], alone: str = "Student",
                       metric: str = "H@50", n_boot: int = 10_000) -> pd.DataFrame:
    """Does a longer budget change a verdict? For every row of `alone`'s role trained longer on seeds where
    `alone` was trained longer too: the paired test `metric` difference (row minus `alone`, bootstrap over users,
    seeds pooled) at the table's budget and at the longer one, each with its 95% interval and verdict."""
    from .codec import decode
    from .report import short_verdict
    from .stats import paired_difference

    rows = _longer_rows(table_runs, probe_runs)
    if alone not in rows:
        raise ConfigError(f"no longer run of {alone!r} on these seeds: the gaps need it at both budgets")
    role, alone_base, alone_long = rows[alone]
    recs = {}
    for label, (r_role, base, longer) in rows.items():
        seeds = [s for s in longer if s in alone_long]
        if label == alone or r_role != role or not seeds:
            continue
        rec = {"seeds": len(seeds)}
        for key, mine, ref in (("", base, alone_base), ("longer ", longer, alone_long)):
            d = paired_difference([decode(ref[s]["models"][role]["ranks"]["test"]) for s in seeds],
                                  [decode(mine[s]["models"][role]["ranks"]["test"]) for s in seeds], metric, n_boot)
            rec.update({f"{key}gap": d["mean"], f"{key}lo": d["lo"], f"{key}hi": d["hi"],
                        f"{key}gap %": d["rel_pct"], f"{key}verdict": short_verdict(d)})
        recs[label] = rec
    out = pd.DataFrame.from_dict(recs, orient="index")
    out.index.name = f"test {metric} minus {alone}"
    return out


def longer_gaps_view(gaps: pd.DataFrame, epochs: int, longer_epochs: int) -> pd.DataFrame:
    """A `longer_budget_gaps` table as the book prints it: at each budget the gap with its 95% interval, and
    the verdict."""
    from .report import ci_text

    def with_ci(key: str) -> list[str]:
        return [f"{g:+.4f} {ci_text(lo, hi)}" for g, lo, hi
                in zip(gaps[f"{key}gap"], gaps[f"{key}lo"], gaps[f"{key}hi"])]

    e1, e2 = f"{epochs:,} epochs", f"{longer_epochs:,} epochs"
    return pd.DataFrame({f"{e1}: gap [95% CI]": with_ci(""), f"{e1}: verdict": gaps["verdict"],
                         f"{e2}: gap [95% CI]": with_ci("longer "), f"{e2}: verdict": gaps["longer verdict"]},
                        index=gaps.index)


def longer_runs(table_runs: Sequence[dict], probe_runs: Sequence[dict]) -> list[dict]:
    """The probe runs that trained a table row's method longer at its learning rates (see `longer_budget_table`),
    each once, in table order."""
    seen: dict[int, dict] = {}
    for _, _, longer in _longer_rows(table_runs, probe_runs).values():
        seen.update({id(r): r for r in longer.values()})
    return list(seen.values())


def forecast_check(trend: pd.DataFrame, longer: pd.DataFrame, metric: str = "N@50") -> pd.DataFrame:
    """The `trend_table`'s forecast of what the longer budget adds to each row's best validation `metric`
    (gain per doubling x log2 of the budget ratio) beside what the `longer_budget_table` measured, for the rows
    in both; "measured / forecast" near 1 means the log trend held. Compare runs of the same seed(s)."""
    rows = [r for r in longer.index if r in trend.index]
    ratio = longer.loc[rows, "longer epochs"] / longer.loc[rows, "epochs"]
    out = pd.DataFrame({"forecast gain": trend.loc[rows, "gain per doubling"] * np.log2(ratio.astype(float)),
                        "measured gain": longer.loc[rows, f"longer best valid {metric}"]
                        - longer.loc[rows, f"best valid {metric}"]})
    out["measured / forecast"] = out["measured gain"] / out["forecast gain"].where(out["forecast gain"] != 0)
    out.index.name = "row"
    return out


def forecast_sentence(check: pd.DataFrame, metric: str = "N@50", within: float = 0.5) -> str:
    """A `forecast_check` in words: forecast and measured gain of each row, and where the log trend held (the
    measured gain within `within` (relative) of the forecast), overstated or understated the gain."""
    each = "; ".join(f"{row} {c['forecast gain']:+.4f} forecast, {c['measured gain']:+.4f} measured"
                     for row, c in check.iterrows())
    r = check["measured / forecast"]
    groups = (("held for", (r - 1).abs() <= within), ("overstated the gain of", r < 1 - within),
              ("understated the gain of", r > 1 + within))
    verdict = "; it ".join(f"{how} {_join(list(r.index[mask]))}" for how, mask in groups if mask.any())
    return (f"the log trends of the table runs against the longer runs, best validation {metric} gained: {each}"
            + (f". Within {100 * within:.0f} %, the trend {verdict}" if verdict else ""))


def retrace_gap(longer: dict, table_run: dict, role: str, metric: str = "N@50") -> float:
    """Largest |difference| in validation `metric` of `role` between a longer run and its table run over the
    epochs both evaluated: 0 when the longer run repeats the table run exactly up to the table's budget."""
    h = history_frame(longer, role).merge(history_frame(table_run, role), on="epoch")
    if h.empty:
        raise ConfigError("the two runs share no evaluated epoch: not a longer run of the same table run")
    return float((h[f"{metric}_x"] - h[f"{metric}_y"]).abs().max())


def longer_sentences(longer: pd.DataFrame, metric: str = "N@50") -> dict[str, str]:
    """A `longer_budget_table` in words, {row: sentence}: its best validation `metric` at both budgets, whether
    the longer run settled, and the paired test H@50 verdict against the table run."""
    from .report import sentence, short_verdict

    out = {}
    for row, t in longer.iterrows():
        n, k = int(t["seeds"]), int(t["still rising"])
        end = f"{int(t['longer epochs']):,}"
        state = (f"settled by epoch {t['plateau epoch']:,.0f}" if k == 0 else
                 f"still rising at epoch {end}" if k == n else f"still rising at epoch {end} on {k} of {n} seeds")
        test = sentence({"verdict": short_verdict(t), "change %": t["change %"], "metric": "H@50",
                         "lo": t["lo"], "hi": t["hi"]}, "its table run")
        out[row] = (f"best validation {metric} {t[f'best valid {metric}']:.4f} at {int(t['epochs']):,} epochs, "
                    f"{t[f'longer best valid {metric}']:.4f} at {end} ({t['valid change %']:+.1f} %), {state}; "
                    f"on the test users {test}")
    return out


def gap_sentence(gaps: pd.DataFrame, epochs: int, longer_epochs: int, alone: str = "the student alone") -> str:
    """A `longer_budget_gaps` table in words: for each distilled student its test gap to `alone` at both
    budgets with the verdicts, which gaps widened or narrowed (in size, either sign) or changed sign, and whether
    any verdict changed."""
    from .report import verdict_words

    e1, e2 = f"{epochs:,}", f"{longer_epochs:,}"
    each = [f"{row} {g['gap']:+.4f} ({verdict_words(g['verdict'])}) at {e1} epochs and {g['longer gap']:+.4f} "
            f"({verdict_words(g['longer verdict'])}) at {e2}" for row, g in gaps.iterrows()]
    g1, g2 = gaps["gap"], gaps["longer gap"]
    flipped = list(gaps.index[g1 * g2 < 0])                            # the sign changed: neither wider nor narrower
    wider = [r for r in gaps.index[g2.abs() > g1.abs()] if r not in flipped]
    narrower = [r for r in gaps.index[g2.abs() < g1.abs()] if r not in flipped]
    moved = [r for r, g in gaps.iterrows() if verdict_words(g["verdict"]) != verdict_words(g["longer verdict"])]
    moves = [f"{how} for {_join(rows)}" for how, rows in
             (("widened", wider), ("narrowed", narrower), ("changed sign", flipped)) if rows]
    trend = f"the gap {' and '.join(moves)}" if moves else ""
    verdicts = (f"the verdict changed for {_join(moved)}" if moved else
                "no verdict changed" if len(gaps) > 1 else "the verdict did not change")
    factor = longer_epochs / epochs
    more = "twice the budget" if factor == 2 else f"{factor:g} times the budget"
    return (f"against {alone}, on the same test users, the test H@50 gaps were: {'; '.join(each)}. "
            + (f"With {more} {trend}, and {verdicts}" if trend else f"With {more} {verdicts}"))


def trend_sentence(trend: pd.DataFrame, rising: Sequence[str], metric: str = "N@50", alone: str = "Student") -> str:
    """Chapter 2's words on a `trend_table`: how fast the `rising` student rows still climb, the budget the
    plateau rule would need at that pace, and whether the distilled students climb faster or slower than the
    student trained alone (`alone`), i.e. which way more epochs would move their comparison. Empty when no
    student row rises."""
    rows = [r for r in trend.index if r in set(rising) and trend.loc[r, "role"] == "student"]
    if not rows:
        return ""
    t = trend.loc[rows]
    text = (f"fitted over the second half of the budget, the best validation {metric} of "
            f"{'the student row' if len(rows) == 1 else 'the student rows'} still rising grows by "
            f"{value_span(t['gain per doubling %'], '.1f')} % per doubling of the budget, so by the 1% rule "
            f"{'it' if len(rows) == 1 else 'they'} would settle only after {rough_multiple(t['x budget'].min())}"
            + ("" if len(rows) == 1 else f" to {rough_multiple(t['x budget'].max())}") + " times this budget")
    students = [r for r in rows if r != alone]
    if alone not in rows or not students:
        return text
    per = trend["gain per doubling"]
    faster = [r for r in students if per[r] > per[alone]]
    slower = [r for r in students if per[r] <= per[alone]]
    text += (f". Per doubling, the student trained alone gains {per[alone]:+.4f} {metric} and "
             f"{_join(students)} {value_span([per[r] for r in students], '+.4f')}")
    if not slower:
        return text + (": if the trends held, more epochs would move every distilled student further above "
                       "the student alone, not close the gaps")
    if not faster:
        return text + (": if the trends held, more epochs would let the student alone catch up with every "
                       "distilled student")
    return text + (f": if the trends held, more epochs would favour {_join(faster)} and let the student alone "
                   f"catch up with {_join(slower)}")


def probe_sentences(probes: pd.DataFrame, predicted: "dict[str, float] | None" = None,
                    metric: str = "N@50") -> dict[str, str]:
    """The `budget_probes` table in words, {probe label: sentence}: its best validation `metric` against the
    table run's (and what a `log_trend` predicted, when given), whether it still rose, and its paired test H@50
    verdict against the table run."""
    from .report import sentence, short_verdict

    base = probes.loc["table run", f"best valid {metric}"]
    out = {}
    for label, p in probes.drop(index="table run").iterrows():
        v = p[f"best valid {metric}"]
        pred = (predicted or {}).get(label)
        rising = ("still rising" if p["still rising"] == p["seeds"] else "settled" if not p["still rising"]
                  else f"still rising on {int(p['still rising'])} of {int(p['seeds'])} seeds")
        test = sentence({"verdict": short_verdict(p), "change %": p["change %"], "metric": "H@50",
                         "lo": p["lo"], "hi": p["hi"]}, "the table run")
        out[label] = (f"best validation {metric} {v:.4f} ({100 * (v / base - 1):+.1f} %"
                      + (f"; the trend predicted {pred:.4f}" if pred is not None else "")
                      + f"), {rising} at its end; on the test users the student is {test}")
    return out


def ceiling_sentence(probes: pd.DataFrame, metric: str = "N@50", tol: float = 0.01) -> str:
    """What the probes say about the table run: where those that settled (on all their seeds) levelled off, and
    whether the best level any probe reached lies more than `tol` above the table run's best validation `metric`
    (then its budget cost the student that much, at least while that probe was still rising) or within `tol`
    (more training would add little; said only when a probe settled). Empty when neither can be said."""
    col = f"best valid {metric}"
    base = float(probes.loc["table run", col])
    others = probes.drop(index="table run")
    done = others[others["still rising"] == 0]
    top = others[col].idxmax()
    level, rising = float(others.loc[top, col]), int(others.loc[top, "still rising"])
    parts = []
    if not done.empty:
        where = ", ".join(f"{label} at {v:.4f} ({100 * (v / base - 1):+.1f} %)" for label, v in done[col].items())
        who = "every probe" if len(done) == len(others) else f"of the probes, {_join(list(done.index))}"
        parts.append(f"{who} settled, on a "
                     f"best validation {metric} against the table run's {base:.4f}: {where}")
    if level > (1 + tol) * base:
        how = "more epochs" if others.loc[top, "lr"] == probes.loc["table run", "lr"] else "a larger learning rate"
        still = (f", and still rising on {rising} of {int(others.loc[top, 'seeds'])} seeds" if rising else "")
        parts.append(f"the table run stopped {100 * (level / base - 1):.1f} % below the best level a probe reached "
                     f"({top}, with {how}{still}): its budget cost this student {'at least ' if rising else ''}"
                     "that much on validation")
    elif not done.empty:
        parts.append("the table run was within 1% of every probe's best level, so more training would add little "
                     "to this student")
    return ". ".join(p[:1].upper() + p[1:] if i else p for i, p in enumerate(parts))


def trend_check(trend: pd.DataFrame, probes: pd.DataFrame, predicted: dict[str, float], row: str = "Student",
                metric: str = "N@50") -> str:
    """The trend of `row` (a `trend_table` line) against the probe that only trained longer: what it forecast
    (best value, budget to settle) and what the probe measured. Empty without such a probe."""
    label = next((p for p in predicted if p in probes.index), None)
    if label is None or row not in trend.index:
        return ""
    p, base = probes.loc[label], probes.loc["table run"]
    factor = p["epochs"] / base["epochs"]
    needed = float(trend.loc[row, "x budget"])
    settle = "that it had settled" if needed <= 1 else f"{rough_multiple(needed)} times the budget to settle"
    text = (f"for the student alone the trend forecast a best validation {metric} of {predicted[label]:.4f} at "
            f"{factor:g} times the budget, and {settle}; the probe reached {p[f'best valid {metric}']:.4f}")
    if p["still rising"]:
        seeds = int(p.get("seeds", 1))
        return text + " and was still rising" + (f" on {int(p['still rising'])} of {seeds} seeds" if seeds > 1 else "")
    text += f" and settled by epoch {p['plateau epoch']:,.0f}"
    if needed > factor:
        text += (": the curve bends over sooner than a logarithm, so the trends above overstate how far the "
                 "rows are from settling")
    return text


def value_span(values: Sequence[float], fmt: str, sep: str = " to ") -> str:
    """'lo to hi' of some values in a format spec (e.g. '.2f'), or the one value when they agree at that
    precision."""
    lo, hi = format(float(np.min(values)), fmt), format(float(np.max(values)), fmt)
    return lo if lo == hi else f"{lo}{sep}{hi}"


def rough_multiple(x: float) -> str:
    """A large multiple in words, to one significant figure: 1,919 -> '2,000', 3.76e6 -> '4 million'."""
    if x < 10:
        return f"{x:.1f}"
    r = float(f"{x:.1g}")
    return f"{r / 1e6:,.0f} million" if r >= 1e6 else f"{r:,.0f}"
