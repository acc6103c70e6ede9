"""Reproduce the paper's Tables 1-7 and Figures 3-6 (SPEC §7) with one command: collect the runs every
table and figure needs, train the missing ones through the resumable grid, then execute one parameterised
notebook per table and figure with papermill.

    python -m ibd_lite reproduce --profile converged --jobs 2          # train what is missing, render all
    python -m ibd_lite reproduce --profile converged --dry-run         # what would train, and how long
    python -m ibd_lite reproduce --profile paper --device cuda --list  # one shell command per pending run

A run is one JSON file named after its config (results/<profile>/<name>.json): files made on several
machines merge by copying them into one folder, and a finished file is never redone. The helpers at the
end (`select_runs`, `paper_table`, `curves`, `round_counts`, `gamma_grid`, `timing`) are what the
notebooks in book/reproduce/ use to turn result files into tables and figures.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import experiments as E
from .codec import compact, decode
from .config import PROFILES, make_config, resolve_device
from .errors import ConfigError, choice_error
from .provenance import REPO
from .report import STUDENT_ROWS, Run, load_runs, means, standard_pairs, summary
from .runner import is_finished, load_result, lock_path, write_json

NOTEBOOKS = REPO / "book" / "reproduce"


@dataclass(frozen=True)
class Target:
    """One table or figure: the (experiment, dataset, model) grids behind it and the notebook that renders it."""

    name: str
    parts: tuple[tuple[str, str, str], ...]
    notebook: str | None                            # None: rendered elsewhere (the book's chapters)
    params: tuple[tuple[str, Any], ...] = ()
    max_seeds: tuple[tuple[str, int], ...] = ()     # (experiment, n): at most n seeds of that part


def targets() -> dict[str, Target]:
    """Every reproducible table and figure, by the name `--only` takes."""
    out = {f"table-{d}-{m}": Target(f"table-{d}-{m}", (("table", d, m),), "table.ipynb",
                                    (("dataset", d), ("model", m)))
           for d in E.TABLE_DATASETS for m in E.TABLE_MODELS}
    (c3,), (c4, c5), (c6,) = E.FIGURE_CELLS["curves"], E.FIGURE_CELLS["rounds"], E.FIGURE_CELLS["figure6"]
    out["fig3"] = Target("fig3", (("curves", *c3),), "fig3.ipynb", (("dataset", c3[0]), ("model", c3[1])))
    out["fig4"] = Target("fig4", (("rounds", *c4),), "fig45.ipynb",
                         (("dataset", c4[0]), ("model", c4[1]), ("figure", 4)))
    out["fig5"] = Target("fig5", (("rounds", *c5),), "fig45.ipynb",
                         (("dataset", c5[0]), ("model", c5[1]), ("figure", 5)))
    out["fig6"] = Target("fig6", (("figure6", *c6),), "fig6.ipynb", (("dataset", c6[0]), ("model", c6[1])))
    out["table7"] = Target("table7", tuple(("table", d, m) for d in E.TABLE_DATASETS for m in E.TABLE_MODELS),
                           "table7.ipynb")
    # the runs chapters 2-5 show beyond the CiteULike-t CDAE table: BD with the released code's direction
    # (chapter 4, one seed) and iBD without carry-over (chapter 5's ablation, 3 seeds)
    d, m = CHAPTER_CELL
    out["chapters"] = Target("chapters", (("table", d, m), ("direction", d, m), ("ablation", d, m)), None,
                             max_seeds=(("direction", 1), ("ablation", 3)))
    return out


CHAPTER_CELL = ("citeulike-t", "cdae")      # the (dataset, model) the chapters discuss


def default_seeds(dataset: str, model: str) -> int:
    """Seeds per (dataset, model): 5 where the chapters discuss the comparison (CiteULike-t CDAE), else 3 (SPEC §8)."""
    return 5 if (dataset, model) == CHAPTER_CELL else 3


def data_name(dataset: str, profile: str) -> str:
    """The dataset a profile actually trains on: at `ci` the synthetic data stands in for every dataset."""
    return "synthetic" if profile == "ci" else dataset


@dataclass
class Plan:
    """The deduplicated runs behind some targets, each with its file name, and the pending ones."""

    profile: str
    device: str
    out_dir: Path
    targets: list[Target]
    seeds: dict[tuple[str, str], int]
    configs: list[dict[str, Any]]
    names: list[str]
    done: dict[str, Path] = field(default_factory=dict)         # name -> finished file (maybe another name)

    @property
    def pending(self) -> list[tuple[dict[str, Any], str]]:
        """(config, file name) of every run without a finished result."""
        return [(c, n) for c, n in zip(self.configs, self.names) if n not in self.done]


def make_plan(profile: str = "converged", only: Sequence[str] | None = None, seeds: int | None = None,
              device: str = "auto", out_dir: "str | Path | None" = None, **overrides: Any) -> Plan:
    """Collect, check and deduplicate the configs of the chosen targets, and find the finished ones.

    `seeds` = N runs seeds 0..N-1 everywhere; None: `default_seeds` per (dataset, model). `device` "cuda" is
    accepted on a machine without CUDA (for --list); training there fails with the CUDA error. Keyword
    overrides (e.g. epochs=2) apply to every config (tests and exploration; never for the book's tables).
    """
    if profile not in PROFILES:
        raise choice_error("profile", profile, PROFILES)
    if seeds is not None and (not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1):
        raise ConfigError(f"seeds={seeds!r} is out of range: it must be an integer >= 1 (seeds 0..N-1 are run)")
    every = targets()
    chosen = list(every) if not only else list(dict.fromkeys(only))
    unknown = [t for t in chosen if t not in every]
    if unknown:
        raise ConfigError(f"unknown target(s) {unknown}; valid targets are: {', '.join(every)}")
    dev = device if str(device).lower().startswith("cuda") else resolve_device(device)
    n_seeds = {(d, m): seeds or default_seeds(d, m) for d in E.TABLE_DATASETS for m in E.TABLE_MODELS}
    configs, names = [], []
    for t in (every[n] for n in chosen):
        cap = dict(t.max_seeds)
        for exp, d, m in t.parts:
            for c in E.experiment_configs(exp, profile=profile, dataset=data_name(d, profile), model=m,
                                          seeds=range(min(n_seeds[d, m], cap.get(exp, n_seeds[d, m]))),
                                          device=dev, **overrides):
                name = config_name(c)
                if name not in names:
                    configs.append(c)
                    names.append(name)
    out = Path(out_dir) if out_dir is not None else REPO / "results" / profile
    plan = Plan(profile, dev, out, [every[n] for n in chosen], n_seeds, configs, names)
    refresh(plan)
    return plan


def config_name(c: dict[str, Any]) -> str:
    """The result file name of a config (its device kept as given: "cuda" resolves on a CPU-only machine too)."""
    d = make_config(**dict(c, device="cpu")).to_dict()
    d["device"] = str(c.get("device", "cpu")).lower()
    return E.run_name(d)


def _key(config: dict[str, Any]) -> str:
    """A config's identity apart from the device it ran on (a CPU and a GPU result are one run)."""
    return json.dumps({k: v for k, v in config.items() if k != "device"}, sort_keys=True)


def finished_index(out_dir: Path) -> dict[str, Path]:
    """Finished results of the current protocol and training code in a folder, by device-free config key."""
    index: dict[str, Path] = {}
    for path in sorted(out_dir.glob("*.json")) if out_dir.is_dir() else []:
        r = load_result(path)
        if isinstance(r, dict) and isinstance(r.get("config"), dict) and is_finished(r, r["config"]):
            index[_key(r["config"])] = path
    return index


def refresh(plan: Plan) -> None:
    """Re-read the result folder: which of the plan's runs are finished."""
    index = finished_index(plan.out_dir)
    keys = {_key(make_config(**dict(c, device="cpu")).to_dict()): n for c, n in zip(plan.configs, plan.names)}
    plan.done = {n: index[k] for k, n in keys.items() if k in index}


# ------------------------------------------------------------------------------------------ estimates

class Estimator:
    """Seconds a run takes: the mean recorded total time of finished runs of the same (profile, dataset,
    model, method), else of the same (profile, method), else of the profile, else None; learns from runs
    as they finish."""

    def __init__(self, out_dir: Path):
        self.fine: dict[tuple, list[float]] = {}
        self.coarse: dict[tuple, list[float]] = {}
        for path in sorted(out_dir.glob("*.json")) if out_dir.is_dir() else []:
            self.add(path)

    def add(self, path: Path) -> None:
        """Learn from one result file (ignored when it has no timing)."""
        r = load_result(path)
        try:
            c, s = r["config"], float(r["timing"]["total_s"])
        except (TypeError, KeyError, ValueError):
            return
        self.fine.setdefault((c["profile"], c["dataset"], c["model"], c["method"]), []).append(s)
        self.coarse.setdefault((c["profile"], c["method"]), []).append(s)
        self.coarse.setdefault((c["profile"],), []).append(s)

    def get(self, c: dict[str, Any]) -> float | None:
        """Estimated seconds of config `c`."""
        f = self.fine.get((c["profile"], c["dataset"], c["model"], c["method"]))
        g = self.coarse.get((c["profile"], c["method"])) or self.coarse.get((c["profile"],))
        return float(np.mean(f)) if f else float(np.mean(g)) if g else None


def seconds_estimates(plan: Plan) -> list[float | None]:
    """Estimated seconds of each pending run (see Estimator)."""
    est = Estimator(plan.out_dir)
    return [est.get(c) for c, _ in plan.pending]


def format_seconds(s: float | None) -> str:
    """'3 h 05 min', '12 min 30 s', '8 s' or 'unknown'."""
    if s is None or not math.isfinite(s):
        return "unknown"
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def time_left(estimates: Iterable[float | None], jobs: int = 1, fallback: float | None = None) -> float | None:
    """Wall time left for runs with these estimates on `jobs` workers (unknown ones cost `fallback`)."""
    xs = [e if e is not None else fallback for e in estimates]
    if any(x is None for x in xs):
        return None
    return sum(xs) / max(1, jobs)


def describe(plan: Plan, jobs: int = 1) -> str:
    """What --dry-run prints: targets, run counts, the pending runs and the estimated time."""
    est = seconds_estimates(plan)
    known = [e for e in est if e is not None]
    lines = [f"profile {plan.profile}, device {plan.device}, results in {plan.out_dir}",
             f"targets: {', '.join(t.name for t in plan.targets)}",
             f"runs: {len(plan.configs)} in all, {len(plan.done)} finished, {len(plan.pending)} to train"]
    if plan.pending:
        left = time_left(est, jobs)
        lines.append(f"estimated time with --jobs {jobs}: {format_seconds(left)}"
                     + ("" if left is not None else f" ({len(known)} of {len(est)} runs have a finished run of "
                                                    "the same kind to estimate from)"))
        lines += [f"  {n}  (~{format_seconds(e)})" for (_, n), e in zip(plan.pending, est)]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ --list

def run_command(c: dict[str, Any], out: Path) -> str:
    """One self-contained shell command that trains config `c` into `out` (python -m ibd_lite run ...)."""
    args = ["python", "-m", "ibd_lite", "run"]
    for k, v in c.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, (list, tuple)):
            args += [flag, *map(str, v)]
        elif isinstance(v, bool):
            if v:
                raise ConfigError(f"{k}=True cannot be passed to `ibd_lite run` as a flag value")
        elif v is not None:
            args += [flag, str(v)]
    return shlex.join([*args, "--quiet", "--out", str(out)])


def list_commands(plan: Plan) -> list[str]:
    """One command per pending run, writing to the plan's folder."""
    return [run_command(c, plan.out_dir / n) for c, n in plan.pending]


# ------------------------------------------------------------------------------------------ training

@dataclass
class Outcome:
    """What `train` did: file names trained, found finished, and failed (with their log files)."""

    trained: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def log_path(out_dir: Path, name: str) -> Path:
    """Where a failed run's traceback goes: <out_dir>/logs/<name>.log."""
    return Path(out_dir) / "logs" / (Path(name).stem + ".log")


def train_one(c: dict[str, Any], out_dir: str, name: str) -> tuple[str, str, str | None]:
    """Train one config through run_grid (locks, atomic writes); never raises on a failed run: the
    traceback goes to its log file -> (name, "trained" | "finished" | "failed", log path or None)."""
    log = log_path(Path(out_dir), name)
    try:
        status: list[str] = []
        E.run_grid([c], out_dir, progress=False, on_done=lambda p, s: status.append(s))
        if status[0] == "trained":
            compact_file(Path(out_dir) / name)
        log.unlink(missing_ok=True)                 # an old failure of this run is no longer current
        return name, status[0], None
    except Exception:  # noqa: BLE001 - one failed run must not stop the others: it is logged and reported
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"config: {json.dumps(c, sort_keys=True)}\n\n{traceback.format_exc()}")
        return name, "failed", str(log)


def train(plan: Plan, jobs: int = 1, progress: bool = True,
          on_done: Callable[[str, str], None] | None = None) -> Outcome:
    """Train every pending run of the plan, `jobs` at a time, with a bar showing the estimated time left.

    Runs another process holds right now (a second reproduce or a cluster job) go last. A run that raises
    is logged and reported in the outcome; the others continue. on_done(name, status) per run.
    """
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(f"jobs={jobs!r} is out of range: it must be an integer >= 1 (worker processes)")
    resolve_device(plan.device)                     # CUDA asked for but absent: a clear error before any work
    pending = sorted(plan.pending, key=lambda cn: _held(plan.out_dir / cn[1]))
    est = Estimator(plan.out_dir)
    outcome = Outcome(finished=list(plan.done))
    left = dict((n, c) for c, n in pending)
    took: list[float] = []
    bar = tqdm(total=len(pending), desc=f"reproduce {plan.profile}", unit="run", disable=not progress)
    t0 = [time.perf_counter()]

    def record(name: str, status: str, log: str | None) -> None:
        left.pop(name, None)
        took.append(time.perf_counter() - t0[0])
        t0[0] = time.perf_counter()
        if status == "failed":
            outcome.failed[name] = log
            tqdm.write(f"FAILED {name}: see {log}", file=sys.stderr)
        else:
            (outcome.trained if status == "trained" else outcome.finished).append(name)
            est.add(plan.out_dir / name)
        fallback = float(np.mean(took)) * jobs if took else None
        bar.set_postfix_str(f"left ≈ {format_seconds(time_left(map(est.get, left.values()), jobs, fallback))}")
        bar.update()
        if on_done is not None:
            on_done(name, status)

    plan.out_dir.mkdir(parents=True, exist_ok=True)
    bar.set_postfix_str(f"left ≈ {format_seconds(time_left(map(est.get, left.values()), jobs))}")
    if jobs == 1:
        for c, n in pending:
            bar.set_description_str(f"{c['dataset']} {c['model']} {c['method']} s{c['seed']}")
            record(*train_one(c, str(plan.out_dir), n))
    else:
        _train_parallel(pending, plan.out_dir, jobs, record)
    bar.close()
    refresh(plan)
    return outcome


def _train_parallel(pending: list[tuple[dict, str]], out_dir: Path, jobs: int,
                    record: Callable[[str, str, str | None], None]) -> None:
    """`jobs` worker processes (fresh, each with cores // jobs torch threads), one run per task."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    with ProcessPoolExecutor(jobs, mp_context=E._worker_context(), initializer=E._worker_init,
                             initargs=(max(1, cores // jobs),)) as pool:
        futures = {pool.submit(train_one, c, str(out_dir), n): n for c, n in pending}
        for f in as_completed(futures):
            try:
                record(*f.result())
            except BrokenProcessPool:               # a worker died (out of memory, killed): say which run
                record(futures[f], "failed", "(a worker process died while training it; rerun to resume)")


def _held(path: Path) -> bool:
    """Is this run's lock held by another process right now? (probe without waiting)"""
    from filelock import FileLock, Timeout

    lock = FileLock(lock_path(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


# ------------------------------------------------------------------------------------------ compact store

def compact_file(path: Path) -> bool:
    """Rewrite a finished result compacted (atomically, under its lock); False when nothing changed or
    another process holds it."""
    from filelock import FileLock, Timeout

    lock = FileLock(lock_path(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return False
    try:
        r = load_result(path)
        if not (isinstance(r, dict) and isinstance(r.get("config"), dict)):
            return False
        small = compact(r)
        if small == r:
            return False
        write_json(path, small)
        return True
    finally:
        lock.release()


def compact_store(plan: Plan) -> int:
    """Compact every finished result of the plan (e.g. files merged from other machines); how many changed."""
    return sum(compact_file(p) for p in set(plan.done.values()))


# ------------------------------------------------------------------------------------------ notebooks

def notebook_jobs(plan: Plan, nb_dir: Path) -> list[tuple[Target, Path, Path, dict[str, Any]]]:
    """(target, template, executed copy, parameters) of every target's notebook."""
    out = []
    for t in (t for t in plan.targets if t.notebook):
        params = dict(t.params, profile=plan.profile, results_dir=str(Path(plan.out_dir).resolve()))
        if "dataset" in params:
            params["seeds"] = plan.seeds.get((params["dataset"], params["model"]))
        out.append((t, NOTEBOOKS / t.notebook, Path(nb_dir) / f"{t.name}.ipynb", params))
    return out


def execute_notebooks(plan: Plan, nb_dir: "str | Path", progress: bool = True) -> dict[str, str]:
    """Execute every target's notebook with papermill into nb_dir; {target: error} of those that failed."""
    import papermill as pm

    nb_dir = Path(nb_dir)
    nb_dir.mkdir(parents=True, exist_ok=True)
    failed = {}
    env_before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env_before) if p)   # kernel: this ibd_lite
    try:
        for t, src, dst, params in notebook_jobs(plan, nb_dir):
            t0 = time.perf_counter()
            try:
                pm.execute_notebook(str(src), str(dst), parameters=params, cwd=str(src.parent), progress_bar=False)
            except Exception as e:  # noqa: BLE001 - report and go on with the other notebooks
                failed[t.name] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
                print(f"FAILED notebook {t.name} ({src.name}) -> {dst}: {failed[t.name]}", file=sys.stderr)
                continue
            if progress:
                print(f"rendered {t.name}: {dst} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    finally:
        if env_before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = env_before
    return failed


def default_nb_dir(profile: str) -> Path:
    """Executed notebooks: book/reproduced/<profile> (build/reproduced/ci for the ci profile: not committed)."""
    return REPO / ("build" if profile == "ci" else "book") / "reproduced" / profile


# ------------------------------------------------------------------------------------------ notebook helpers

def select_runs(results_dir: "str | Path", profile: str, seeds: int | None = None) -> list[Run]:
    """The finished runs of one profile in a folder, seeds 0..seeds-1 only when `seeds` is given."""
    runs = [r for r in load_runs(results_dir) if r.config.get("profile") == profile
            and (seeds is None or r.config["seed"] < seeds)]
    if not runs:
        raise ConfigError(f"no {profile} results in {results_dir}: run `python -m ibd_lite reproduce --profile "
                          f"{profile}` first")
    return runs


def improvements(rows: dict[str, list]) -> pd.DataFrame:
    """Improv.BD-T / Improv.BD-S: iBD over BD in % of the seed means, per metric."""
    m = means(rows)
    out = {}
    for side, tag in (("Teacher", "T"), ("Student", "S")):
        if f"BD-{side}" in m.index and f"iBD-{side}" in m.index:
            out[f"Improv.BD-{tag}"] = (m.loc[f"iBD-{side}"] - m.loc[f"BD-{side}"]) / m.loc[f"BD-{side}"] * 100
    return pd.DataFrame(out).T


def paper_table(rows: dict[str, list], decimals: int = 4) -> pd.DataFrame:
    """The paper's table layout: mean ± sd per row and metric, then the Improv.BD-T/S rows (in %)."""
    table = summary(rows, decimals)
    imp = improvements(rows)
    extra = pd.DataFrame({m: [f"{v:+.2f}%" for v in imp[m]] for m in imp.columns}, index=imp.index)
    extra["seeds"] = ""
    return pd.concat([table, extra]).rename_axis("row")


def spec_pairs(rows: dict[str, list]) -> list[tuple[str, str]]:
    """SPEC §8's comparisons of the reproduction: iBD vs BD (both sides), iBD-S vs the best other student."""
    pairs = [(a, b) for a, b in (("BD-Teacher", "iBD-Teacher"), ("BD-Student", "iBD-Student"))
             if a in rows and b in rows]
    best = [p for p in standard_pairs(rows) if p[1] == "iBD-Student" and p[0] in STUDENT_ROWS]
    return pairs + [p for p in best[-1:] if p not in pairs]


def short_verdict(v: str) -> str:
    """'B is ahead of A' -> 'ahead'; '... not distinguishable ...' -> 'not distinguishable'."""
    return "ahead" if " ahead of " in v else "behind" if " behind " in v else "not distinguishable"


def curves(runs: Sequence[Run], dataset: str, model: str) -> pd.DataFrame:
    """Figure 3: test metrics every eval_every epochs of the BD and iBD runs, one line per
    (method, model, seed, epoch, metric)."""
    recs = []
    for r in runs:
        c = r.config
        if (c["dataset"], c["model"]) != (dataset, model) or c["method"] not in ("bd", "ibd"):
            continue
        if c.get("gamma_ts") != 0.5 or c.get("gamma_st") != 0.5 or c.get("ibd_variant", "full") != "full":
            continue
        for h in r.result["history"]:
            for role, ms in h.get("test", {}).items():
                recs += [{"method": "iBD" if c["method"] == "ibd" else "BD", "model": role, "seed": c["seed"],
                          "epoch": h["epoch"], "metric": k, "value": v} for k, v in ms.items()]
    if not recs:
        raise ConfigError(f"no BD/iBD runs with test curves for {dataset}/{model}: run "
                          "`python -m ibd_lite reproduce --only fig3` first")
    return pd.DataFrame(recs)


def round_counts(runs: Sequence[Run], dataset: str, model: str, rounds: int = 10) -> pd.DataFrame:
    """Figures 4-5: per user and side, items sampled in rounds 0..rounds-1 and, of those, how many were found
    corrected at the next round's check (rounds 1..rounds), averaged over seeds."""
    recs = []
    for r in runs:
        c = r.config
        if (c["dataset"], c["model"], c["method"]) != (dataset, model, "ibd") or "rounds" not in r.result:
            continue
        if c.get("gamma_ts") != 0.5 or c.get("gamma_st") != 0.5 or c.get("ibd_variant", "full") != "full":
            continue
        log = {e["round"]: e for e in r.result["rounds"]}
        for d, side in (("ts", "student side (T→S)"), ("st", "teacher side (S→T)")):
            sampled = sum(decode(log[t][d]["per_user"]["sampled"]) for t in range(rounds) if t in log)
            corrected = sum(decode(log[t][d]["per_user"]["corrected"]) for t in range(1, rounds + 1) if t in log)
            recs.append(pd.DataFrame({"user": np.arange(len(sampled)), "side": side, "seed": c["seed"],
                                      "sampled": sampled, "corrected": corrected}))
    if not recs:
        raise ConfigError(f"no iBD runs with round logs for {dataset}/{model}: run `python -m ibd_lite reproduce "
                          "--only fig4 fig5` first")
    return pd.concat(recs).groupby(["side", "user"], as_index=False)[["sampled", "corrected"]].mean()


def gamma_grid(runs: Sequence[Run], dataset: str, model: str, metric: str = "H@50") -> pd.DataFrame:
    """Figure 6: seed means of a test metric per (γ_T→S, γ_S→T, role) of the iBD runs; refuses runs that
    differ in anything but the gammas, the seed and the device."""
    mine = [r for r in runs if r.config.get("ibd_variant", "full") == "full"
            and (r.config["dataset"], r.config["model"], r.config["method"]) == (dataset, model, "ibd")]
    if not mine:
        raise ConfigError(f"no iBD runs for {dataset}/{model}: run `python -m ibd_lite reproduce --only fig6` first")
    rest = {json.dumps({k: v for k, v in r.config.items() if k not in ("gamma_ts", "gamma_st", "seed", "device")},
                       sort_keys=True) for r in mine}
    if len(rest) > 1:
        raise ConfigError(f"the iBD runs of {dataset}/{model} differ in more than the gammas (e.g. budgets); keep "
                          "one profile's runs per folder")
    recs = [{"gamma_ts": r.config["gamma_ts"], "gamma_st": r.config["gamma_st"], "role": role,
             "seed": r.config["seed"], metric: r.result["models"][role]["test"][metric]}
            for r in mine for role in ("teacher", "student")]
    df = pd.DataFrame(recs)
    return df.groupby(["role", "gamma_ts", "gamma_st"], as_index=False).agg(**{metric: (metric, "mean"),
                                                                               "seeds": ("seed", "nunique")})


TIMING_FIELDS = ("pretrain_s", "distill_s", "predict_s")


def timing(runs: Sequence[Run]) -> pd.DataFrame:
    """Table 7: mean seconds of the pre-train, distillation and prediction phases per (dataset, model,
    method) of the table runs, with the runs' hardware (provenance device_name)."""
    from .report import is_table_config

    recs = [{"dataset": r.config["dataset"], "model": r.config["model"], "method": r.config["method"],
             "seed": r.config["seed"], "hardware": r.result.get("provenance", {}).get("device_name", "unknown"),
             **{k: r.result["timing"].get(k) for k in TIMING_FIELDS}}
            for r in runs if is_table_config(r.config)]
    if not recs:
        raise ConfigError("no table runs to time: run `python -m ibd_lite reproduce --only table7` first")
    df = pd.DataFrame(recs)
    methods = list(dict.fromkeys(m for _, m, _ in E.TABLE_ROWS))
    df["method"] = pd.Categorical(df["method"], methods, ordered=True)
    g = df.groupby(["dataset", "model", "method"], observed=True)
    out = g[list(TIMING_FIELDS)].mean()
    out["runs"] = g.size()
    return out


def hardware(runs: Sequence[Run]) -> list[str]:
    """The distinct device names the runs were made on."""
    return sorted({r.result.get("provenance", {}).get("device_name", "unknown") for r in runs})
