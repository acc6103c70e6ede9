"""The book's comparison tables from a folder of finished runs (SPEC §7-8).

A table is printed only when its rows are comparable: every row of a (dataset, model) table had the
same budget (profile, sizes, epochs, learning rates, ...), a row pools runs whose configs are identical
apart from the seed, and no seed appears twice. Verdicts come from paired bootstrap intervals
(`ibd_lite.stats`) on the per-user test ranks every run stores.

    python -m ibd_lite report results/converged
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .codec import decode
from .config import make_config
from .errors import ConfigError
from .experiments import METRICS, TABLE_ROWS
from .stats import paired_difference, verdict

# Fields that make two rows' budgets equal (SPEC §8) and fields that never matter for grouping.
BUDGET_KEYS = ("profile", "teacher_dim", "student_dim", "pretrain_epochs", "epochs", "eval_every", "early_stop",
               "lr_teacher", "lr_student", "wd_teacher", "wd_student", "batch_size", "neg_per_pos",
               "min_user_interactions", "ks")
IGNORED_KEYS = ("seed", "device", "data_dir", "extra")
STUDENT_ROWS = ("Student", "RD", "CD", "BD-Student")


@dataclass
class Run:
    """One finished result file."""

    path: Path
    result: dict

    @property
    def config(self) -> dict:
        return self.result["config"]

    def ranks(self, role: str, part: str = "test") -> np.ndarray | None:
        r = self.result["models"].get(role, {}).get("ranks")
        return None if r is None else decode(r[part])


def load_runs(results_dir: "str | Path") -> list[Run]:
    """Every readable result file in a folder (sorted by name)."""
    runs = []
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            r = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(r, dict) and "config" in r and "models" in r:
            runs.append(Run(path, r))
    if not runs:
        raise ConfigError(f"no finished results in {results_dir}: run `python -m ibd_lite grid table ...` first")
    return runs


def is_table_config(c: dict) -> bool:
    """Is this run the method's default variant (what a paper table shows), not an ablation or a sweep?"""
    keep = {k: c[k] for k in ("dataset", "model", "method", "seed", *BUDGET_KEYS) if k in c}
    try:
        canon = make_config(**keep, device="cpu").to_dict()
    except ConfigError:
        return False
    return all(canon[k] == c.get(k) for k in canon if k not in IGNORED_KEYS)


def _group_key(c: dict) -> str:
    return json.dumps({k: v for k, v in c.items() if k not in IGNORED_KEYS}, sort_keys=True)


def table_rows(runs: Sequence[Run], dataset: str, model: str,
               defaults_only: bool = True) -> dict[str, list[tuple[Run, str]]]:
    """The runs behind each table row of one (dataset, model), checked for comparability.

    Returns {row label: [(run, role), ...] sorted by seed}. Raises ConfigError naming the files when a row
    mixes configs or repeats a seed, or when rows differ in budget. `defaults_only=False` keeps runs whose
    method settings differ from the defaults (a chapter whose reader changed a parameter).
    """
    mine = [r for r in runs if r.config["dataset"] == dataset and r.config["model"] == model
            and (not defaults_only or is_table_config(r.config))]
    rows: dict[str, list[tuple[Run, str]]] = {}
    for label, method, role in TABLE_ROWS:
        rs = sorted((r for r in mine if r.config["method"] == method), key=lambda r: r.config["seed"])
        if not rs:
            continue
        groups = {_group_key(r.config) for r in rs}
        if len(groups) > 1:
            raise ConfigError(f"row {label} of {dataset}/{model} mixes runs of different configs: "
                              f"{_names(rs)}; move the runs of other budgets to another folder")
        seeds = [r.config["seed"] for r in rs]
        dup = sorted({s for s in seeds if seeds.count(s) > 1})
        if dup:
            raise ConfigError(f"row {label} of {dataset}/{model} has seed(s) {dup} more than once: "
                              f"{_names([r for r in rs if r.config['seed'] in dup])}; keep one file per seed")
        rows[label] = [(r, role) for r in rs]
    budgets = {label: _budget(rs[0][0].config) for label, rs in rows.items()}
    if len({json.dumps(b, sort_keys=True) for b in budgets.values()}) > 1:
        first = next(iter(budgets.values()))
        diff = {label: {k: v for k, v in b.items() if first.get(k) != v} for label, b in budgets.items()}
        raise ConfigError(f"the rows of {dataset}/{model} had different budgets {diff} "
                          f"(files e.g. {_names([rs[0][0] for rs in rows.values()])}); a table compares equal "
                          "budgets only: run the missing rows with the same profile and settings")
    return rows


def _budget(c: dict) -> dict:
    return {k: c.get(k) for k in BUDGET_KEYS}


def _names(runs: Iterable[Run]) -> str:
    return ", ".join(r.path.name for r in runs)


def cells(runs: Sequence[Run]) -> list[tuple[str, str]]:
    """The (dataset, model) pairs present among table runs, in a stable order."""
    seen = dict.fromkeys((r.config["dataset"], r.config["model"]) for r in runs if is_table_config(r.config))
    return list(seen)


def mean_pm_sd(values: Sequence[float], decimals: int = 4) -> str:
    """'0.1120 ± 0.0020': mean ± sd over seeds (ddof=1), same decimals on both sides; one seed has no sd,
    so it prints the value alone rather than a misleading '± 0.0000'."""
    vals = np.asarray(values, dtype=float)
    if len(vals) == 1:
        return f"{vals[0]:.{decimals}f}"
    return f"{vals.mean():.{decimals}f} ± {vals.std(ddof=1):.{decimals}f}"


def summary(rows: dict[str, list[tuple[Run, str]]], decimals: int = 4) -> pd.DataFrame:
    """Mean ± sd over seeds of the test metrics, one line per row, plus the seeds used."""
    out = []
    for label, rs in rows.items():
        vals = np.array([[r.result["models"][role]["test"][m] for m in METRICS] for r, role in rs])
        rec = {"row": label}
        rec.update({m: mean_pm_sd(vals[:, j], decimals) for j, m in enumerate(METRICS)})
        rec["seeds"] = len(rs)
        out.append(rec)
    return pd.DataFrame(out).set_index("row")


def means(rows: dict[str, list[tuple[Run, str]]]) -> pd.DataFrame:
    """Seed means of the test metrics per row (numbers, for plots and prose)."""
    return pd.DataFrame({label: {m: float(np.mean([r.result["models"][role]["test"][m] for r, role in rs]))
                                 for m in METRICS} for label, rs in rows.items()}).T


def compare(rows: dict[str, list[tuple[Run, str]]], a: str, b: str, metric: str = "H@50",
            n_boot: int = 10_000) -> dict:
    """Paired bootstrap of row b − row a on their common seeds."""
    ra = {r.config["seed"]: (r, role) for r, role in rows[a]}
    rb = {r.config["seed"]: (r, role) for r, role in rows[b]}
    seeds = sorted(set(ra) & set(rb))
    if not seeds:
        raise ConfigError(f"rows {a} and {b} share no seed: a paired comparison needs the same seeds")
    ranks_a = [ra[s][0].ranks(ra[s][1]) for s in seeds]
    ranks_b = [rb[s][0].ranks(rb[s][1]) for s in seeds]
    if any(x is None for x in ranks_a + ranks_b):
        raise ConfigError(f"rows {a} / {b} include runs without per-user ranks (older result files): rerun them")
    out = paired_difference(ranks_a, ranks_b, metric, n_boot=n_boot)
    out.update(a=a, b=b, seeds=seeds, verdict=verdict(out, b, a))
    return out


def standard_pairs(rows: dict[str, list]) -> list[tuple[str, str]]:
    """The comparisons the book discusses: BD vs alone, iBD vs BD, RD/CD vs Student, iBD-S vs best student."""
    pairs = [("Teacher", "BD-Teacher"), ("Student", "BD-Student"), ("BD-Teacher", "iBD-Teacher"),
             ("BD-Student", "iBD-Student"), ("Student", "RD"), ("Student", "CD")]
    best = best_student(rows)
    if best is not None:
        pairs.append((best, "iBD-Student"))
    return [(a, b) for a, b in pairs if a in rows and b in rows]


def best_student(rows: dict[str, list]) -> str | None:
    """The student row other than iBD's with the highest mean H@50 (None without iBD-Student or another
    student): the one iBD-Student is compared with."""
    students = [s for s in STUDENT_ROWS if s in rows]
    if "iBD-Student" not in rows or not students:
        return None
    m = means(rows)
    return max(students, key=lambda s: m.loc[s, "H@50"])


def comparisons(rows: dict[str, list], metrics: Sequence[str] = ("H@50", "N@50"),
                pairs: Sequence[tuple[str, str]] | None = None, n_boot: int = 10_000) -> pd.DataFrame:
    """Paired differences (B − A) with 95% CIs (as text, and as numbers lo / hi and in % of A), relative change,
    p and verdict, one line per pair and metric."""
    recs = []
    for a, b in pairs or standard_pairs(rows):
        for m in metrics:
            c = compare(rows, a, b, m, n_boot)
            base = c["mean_a"] if c["mean_a"] > 0 else np.nan                  # change % undefined at 0
            recs.append({"B vs A": f"{b} vs {a}", "metric": m, "A": c["mean_a"], "B": c["mean_b"],
                         "B − A": c["mean"], "95% CI": ci_text(c["lo"], c["hi"]),
                         "change %": 100 * c["mean"] / base, "p": c["p"], "seeds": len(c["seeds"]),
                         "verdict": short_verdict(c), "lo": c["lo"], "hi": c["hi"],
                         "lo %": 100 * c["lo"] / base, "hi %": 100 * c["hi"] / base})
    return pd.DataFrame(recs)


def sentence(t: "pd.Series | dict", a: str) -> str:
    """One paired test (a line of `comparisons`) in words: 'ahead of A (+4.1 % H@50, 95% CI of the difference
    [+0.0012, +0.0061])'; the word comes from the interval alone."""
    word = {"ahead": f"ahead of {a}", "behind": f"behind {a}"}.get(verdict_words(t["verdict"]),
                                                                  f"not distinguishable from {a}")
    change = "change undefined" if pd.isna(t["change %"]) else f"{t['change %']:+.1f} %"
    return f"{word} ({change} {t['metric']}, 95% CI of the difference {ci_text(t['lo'], t['hi'])})"


def ci_text(lo: float, hi: float) -> str:
    """An interval as the book prints it, '[-0.0012, +0.0034]'; a dash when it is missing (NaN)."""
    return "–" if pd.isna(lo) or pd.isna(hi) else f"[{lo:+.4f}, {hi:+.4f}]"


def verdict_words(v: str) -> str:
    """The book's verdict words, 'ahead' / 'behind' / 'not distinguishable', from a short verdict ('ahead',
    'behind', 'n.d.') or a long one ('B is ahead of A', '... not distinguishable ...')."""
    v = f" {v} "
    return "ahead" if " ahead " in v else "behind" if " behind " in v else "not distinguishable"


def short_verdict(ci: dict) -> str:
    """'ahead', 'behind' or 'n.d.' (not distinguishable): B against A, from the interval alone."""
    return "ahead" if ci["lo"] > 0 else "behind" if ci["hi"] < 0 else "n.d."


def commits_and_prints(provs: Sequence[dict]) -> tuple[list[str], list[str]]:
    """The sorted distinct commits (10 characters, '+dirty' when uncommitted changes) and code fingerprints."""
    commits = sorted({p.get("commit", "unknown")[:10] + ("+dirty" if p.get("dirty") else "") for p in provs})
    return commits, sorted({p.get("code_fingerprint", "none") for p in provs})


def mix_note(commits: Sequence[str], prints: Sequence[str]) -> str:
    """What a set of runs' provenance says: a MIXED training code (several fingerprints), uncommitted
    changes, or several commits that share one training code; '' for one clean commit."""
    if len(prints) > 1:
        return "MIXED: more than one training-code fingerprint"
    if any(c.endswith("+dirty") for c in commits):
        return "some runs had uncommitted changes"
    return "several commits, one training code" if len(commits) > 1 else ""


def warmup_id(run: Run, role: str) -> tuple[int, float] | None:
    """The warm-up a run's `role` model continued from, as its result records it: (best epoch, validation
    N@50); None when the run has no such model."""
    w = run.result.get("pretrain", {}).get(role)
    return None if w is None else (int(w["best_epoch"]), float(w["valid_best"]["N@50"]))


def mixed_warmups(runs: Sequence[Run]) -> dict[tuple[int, str], list[tuple[int, float]]]:
    """(seed, role) -> the distinct warm-ups that runs of one seed continued from, where there is more than
    one. Every run of a seed should continue from the same warm-up (it is cached); a warm-up retrained after
    its cache was lost, on a machine whose floating point differs, is a slightly different model."""
    seen: dict[tuple[int, str], set] = {}
    for r in runs:
        for role in ("teacher", "student"):
            w = warmup_id(r, role)
            if w is not None:
                seen.setdefault((r.config["seed"], role), set()).add(w)
    return {k: sorted(v) for k, v in sorted(seen.items()) if len(v) > 1}


def warmup_note(runs: Sequence[Run]) -> str:
    """One sentence naming the seeds whose runs did not all continue from one warm-up ('' when they did)."""
    mixed = mixed_warmups(runs)
    if not mixed:
        return ""
    parts = [f"seed {s}, {role} (validation N@50 {' vs '.join(f'{v:.4f}' for _, v in ws)})"
             for (s, role), ws in mixed.items()]
    return ("not every run of a seed continued from the same warm-up: " + "; ".join(parts) + ". A warm-up "
            "retrained after its cache was lost, on a machine whose floating point differs, is a slightly "
            "different model, so differences between these runs include that of their starting points")


def provenance_of(rows: dict[str, list[tuple[Run, str]]]) -> pd.DataFrame:
    """Which commits and code fingerprints made each row; `mixed` flags a row made by several training codes."""
    recs = []
    for label, rs in rows.items():
        commits, prints = commits_and_prints([r.result.get("provenance", {}) for r, _ in rs])
        recs.append({"row": label, "commits": " ".join(commits), "fingerprints": " ".join(prints),
                     "mixed": len(prints) > 1})
    return pd.DataFrame(recs).set_index("row")


def render(results_dir: "str | Path", n_boot: int = 10_000) -> str:
    """The text `python -m ibd_lite report` prints: per (dataset, model), the table, CIs and provenance."""
    runs = load_runs(results_dir)
    if not cells(runs):
        raise ConfigError(f"none of the {len(runs)} result files in {results_dir} is a table run of the current "
                          "protocol (default variant, equal budgets, per-user ranks); run `python -m ibd_lite grid "
                          "table ...` for this folder")
    parts = []
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.max_colwidth", 60,
                           "display.float_format", "{:.4f}".format):
        for dataset, model in cells(runs):
            rows = table_rows(runs, dataset, model)
            budget = _budget(next(iter(rows.values()))[0][0].config)
            parts.append(f"== {dataset} / {model}: test metrics, mean ± sd over seeds ==")
            parts.append("budget: " + ", ".join(f"{k}={v}" for k, v in budget.items()))
            parts.append(summary(rows).to_string())
            try:
                comp = comparisons(rows, n_boot=n_boot)
                if comp.empty:
                    raise ConfigError("no pair the book discusses (BD vs alone, iBD vs BD, RD/CD vs Student, "
                                      "iBD-Student vs the best other student) has both its rows here")
                parts.append("\npaired differences B − A (per user, pooled over seeds; 95% bootstrap CI over "
                             "users; n.d. = not distinguishable: the interval holds 0):")
                parts.append(comp.to_string(index=False))
            except ConfigError as e:
                parts.append(f"\n(no paired comparison: {e})")
            prov = provenance_of(rows)
            note = mix_note(*commits_and_prints([r.result.get("provenance", {})
                                                 for rs in rows.values() for r, _ in rs]))
            parts.append("\nprovenance:" + (f" {note}" if note else ""))
            parts.append(prov.to_string())
            warm = warmup_note([r for rs in rows.values() for r, _ in rs])
            parts.append(f"warm-ups: MIXED: {warm}" if warm else
                         "warm-ups: the runs of each seed share one warm-up per model")
            parts.append("")
    return "\n".join(parts)
