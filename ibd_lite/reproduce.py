"""Reproduce the paper's Tables 1-7 and Figures 3-6 (SPEC §7) with one command: collect the runs every
table and figure needs, train the missing ones through the resumable grid, then execute one parameterised
notebook per table and figure with papermill.

    python -m ibd_lite reproduce --profile converged --jobs 2          # train what is missing, render all
    python -m ibd_lite reproduce --profile converged --dry-run         # what would train, and how long
    python -m ibd_lite reproduce --profile paper --device cuda --list  # one shell command per pending run
    python -m ibd_lite reproduce --profile converged --jobs 2 --time-limit 2h45m   # a sitting of known length

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
import textwrap
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import experiments as E
from .codec import compact, decode
from .curves import value_span
from .config import PROFILES, make_config, resolve_device
from .errors import ConfigError, choice_error
from .provenance import REPO, usable_cores
from .report import Run, best_student, ci_text, compare, load_runs, means, summary, verdict_words
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
    as they finish.

    Recorded times depend on how busy the machine was when they were made. Runs trained by this process
    (`add(..., fresh=True)`) measure the machine as it is now: the median ratio of their times to the earlier
    mean of their kind (last `SPEED_WINDOW` such runs) scales every estimate (`speed`), and their own times
    are stored divided by it, on the scale of the recorded runs. The ratio compares the method's own part
    (`distill_s`) where both sides recorded it: a run on a fresh machine also retrains the warm-up that the
    recorded runs loaded from the cache, which says nothing about how fast the machine is.
    """

    SPEED_WINDOW = 5

    def __init__(self, out_dir: Path):
        self.fine: dict[tuple, list[float]] = {}
        self.core: dict[tuple, list[float]] = {}    # the method's own part (`distill_s`), same scale
        self.coarse: dict[tuple, list[float]] = {}
        self.ratios: list[float] = []
        self.timings: dict[str, dict] = {}          # file name -> its timing record, as read
        for path in sorted(out_dir.glob("*.json")) if out_dir.is_dir() else []:
            self.add(path)

    def add(self, path: Path, fresh: bool = False) -> None:
        """Learn from one result file (ignored when it has no timing); `fresh`: it was just trained here."""
        r = load_result(path)
        if isinstance(r, dict) and isinstance(r.get("timing"), dict):
            self.timings[Path(path).name] = r["timing"]
        try:
            c, s = r["config"], float(r["timing"]["total_s"])
        except (TypeError, KeyError, ValueError):
            return
        fine = (c["profile"], c["dataset"], c["model"], c["method"])
        core = r["timing"].get("distill_s")
        core = float(core) if isinstance(core, (int, float)) and core > 0 else None
        if fresh:
            if core is not None and self.core.get(fine):
                self.ratios.append(core / float(np.mean(self.core[fine])))
            elif self.fine.get(fine):
                self.ratios.append(s / float(np.mean(self.fine[fine])))
            s /= self.speed                         # kept on the scale of the recorded runs
            core = None if core is None else core / self.speed
        self.fine.setdefault(fine, []).append(s)
        if core is not None:
            self.core.setdefault(fine, []).append(core)
        self.coarse.setdefault((c["profile"], c["method"]), []).append(s)
        self.coarse.setdefault((c["profile"],), []).append(s)

    @property
    def speed(self) -> float:
        """Time of runs trained now relative to the recorded ones of their kind (1.0 until one is known)."""
        return float(np.median(self.ratios[-self.SPEED_WINDOW:])) if self.ratios else 1.0

    def get(self, c: dict[str, Any]) -> float | None:
        """Estimated seconds of config `c` (recorded mean × `speed`; a borrowed mean × `cell_scale`)."""
        f = self.fine.get((c["profile"], c["dataset"], c["model"], c["method"]))
        g = self.coarse.get((c["profile"], c["method"])) or self.coarse.get((c["profile"],))
        base = float(np.mean(f)) if f else float(np.mean(g)) * self.cell_scale(c) if g else None
        return None if base is None else base * self.speed

    def cell_scale(self, c: dict[str, Any]) -> float:
        """How long runs of c's (profile, dataset, model) took relative to the same methods' runs everywhere
        (mean ratio over the methods it has finished; 1.0 when it has none): a Foursquare-NYC CDAE teacher
        taking a sixth of the time of the teachers overall makes its borrowed RD estimate a sixth too."""
        cell = (c["profile"], c["dataset"], c["model"])
        ratios = [np.mean(v) / np.mean(self.coarse[(k[0], k[3])]) for k, v in self.fine.items() if k[:3] == cell]
        return float(np.mean(ratios)) if ratios else 1.0

    def measured(self, c: dict[str, Any]) -> bool:
        """Whether get(c) comes from finished runs of the same dataset, model and method (else it is borrowed
        from other datasets or models, and only rough: a NeuMF or Foursquare epoch costs differently)."""
        return (c["profile"], c["dataset"], c["model"], c["method"]) in self.fine


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


def time_spent(timings: Iterable[dict]) -> dict[str, tuple[float, int]]:
    """{"total_s": (wall seconds, runs), "cpu_s": (CPU seconds, runs)} summed over finished runs' timing
    records, each over the runs that recorded it (runs made before CPU time was recorded have only the wall
    time)."""
    sums = {"total_s": (0.0, 0), "cpu_s": (0.0, 0)}
    for t in timings:
        for k, (x, n) in sums.items():
            if k in t:
                sums[k] = (x + float(t[k]), n + 1)
    return sums


def describe(plan: Plan, jobs: int = 1) -> str:
    """What --dry-run prints: targets, run counts, the pending runs and the estimated time."""
    estimator = Estimator(plan.out_dir)
    est = [estimator.get(c) for c, _ in plan.pending]
    rough = [e is not None and not estimator.measured(c) for (c, _), e in zip(plan.pending, est)]
    known = [e for e in est if e is not None]
    lines = [f"profile {plan.profile}, device {plan.device}, results in {plan.out_dir}",
             f"targets: {', '.join(t.name for t in plan.targets)}",
             f"runs: {len(plan.configs)} in all, {len(plan.done)} finished, {len(plan.pending)} to train"]
    spent = time_spent(estimator.timings.get(p.name, {}) for p in set(plan.done.values()))
    (wall, n_wall), (cpu, n_cpu) = spent["total_s"], spent["cpu_s"]
    if n_wall:
        lines.append(f"the finished runs took {format_seconds(wall)} of wall time summed over runs ({n_wall} of "
                     f"{len(plan.done)} recorded it), and {format_seconds(cpu)} of CPU time ({n_cpu} recorded it)")
    if plan.pending:
        left = time_left(est, jobs)
        note = ("" if left is not None else f" ({len(known)} of {len(est)} runs have a finished run of "
                                            "the same kind to estimate from)")
        if left is not None and any(rough):
            note = (f" (rough: {sum(rough)} of {len(est)} runs are estimated from runs of another dataset, "
                    "model or method)")
        lines.append(f"estimated time with --jobs {jobs}: {format_seconds(left)}{note}")
        lines += [f"  {n}  (~{format_seconds(e)}{', rough' if r else ''})"
                  for (_, n), e, r in zip(plan.pending, est, rough)]
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
    """What `train` did: file names trained, found finished, failed (with their log files) and deferred."""

    trained: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    deferred: list[str] = field(default_factory=list)   # not started: they would not fit in the time limit


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


TIME_MARGIN = 1.1                                   # a run starts when estimate x 1.1 fits in the time left


def fits(estimate: float | None, seconds_left: float | None) -> bool:
    """Whether a run estimated at `estimate` seconds should start with `seconds_left` of a time limit: it must
    fit with a 10% margin (estimates are means over finished runs); no limit or no estimate -> it starts."""
    return seconds_left is None or estimate is None or estimate * TIME_MARGIN <= seconds_left


def train(plan: Plan, jobs: int = 1, progress: bool = True,
          on_done: Callable[[str, str], None] | None = None, time_limit: float | None = None) -> Outcome:
    """Train every pending run of the plan, `jobs` at a time, with a bar showing the estimated time left.

    Runs another process holds right now (a second reproduce or a cluster job) go last. A run that raises
    is logged and reported in the outcome; the others continue. on_done(name, status) per run.
    With `time_limit` (seconds from now), a run starts only if its estimate fits in what is left (`fits`),
    taking the first that fits in plan order; the others are left for the next call (`Outcome.deferred`), so a
    sitting of known length ends with finished runs instead of killed ones.
    """
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(f"jobs={jobs!r} is out of range: it must be an integer >= 1 (worker processes)")
    if time_limit is not None and not (isinstance(time_limit, (int, float)) and time_limit > 0):
        raise ConfigError(f"time_limit={time_limit!r} is out of range: it must be a positive number of seconds")
    resolve_device(plan.device)                     # CUDA asked for but absent: a clear error before any work
    queue = sorted(plan.pending, key=lambda cn: _held(plan.out_dir / cn[1]))
    est = Estimator(plan.out_dir)
    outcome = Outcome(finished=list(plan.done))
    left = dict((n, c) for c, n in queue)
    took: list[float] = []
    bar = tqdm(total=len(queue), desc=f"reproduce {plan.profile}", unit="run", disable=not progress)
    t0 = [time.perf_counter()]
    stop_at = None if time_limit is None else time.perf_counter() + time_limit

    def record(name: str, status: str, log: str | None) -> None:
        left.pop(name, None)
        took.append(time.perf_counter() - t0[0])
        t0[0] = time.perf_counter()
        if status == "failed":
            outcome.failed[name] = log
            tqdm.write(f"FAILED {name}: see {log}", file=sys.stderr)
        else:
            (outcome.trained if status == "trained" else outcome.finished).append(name)
            est.add(plan.out_dir / name, fresh=status == "trained")
        fallback = float(np.mean(took)) * jobs if took else None
        bar.set_postfix_str(f"left ≈ {format_seconds(time_left(map(est.get, left.values()), jobs, fallback))}")
        bar.update()
        if on_done is not None:
            on_done(name, status)

    def take() -> tuple[dict, str] | None:
        """The next queued run to start: the first that fits in the time left, or None."""
        remaining = None if stop_at is None else stop_at - time.perf_counter()
        for i, (c, _) in enumerate(queue):
            if fits(est.get(c), remaining):
                return queue.pop(i)
        return None

    plan.out_dir.mkdir(parents=True, exist_ok=True)
    bar.set_postfix_str(f"left ≈ {format_seconds(time_left(map(est.get, left.values()), jobs))}")
    if jobs == 1:
        while (cn := take()) is not None:
            bar.set_description_str(f"{cn[0]['dataset']} {cn[0]['model']} {cn[0]['method']} s{cn[0]['seed']}")
            record(*train_one(cn[0], str(plan.out_dir), cn[1]))
    else:
        _train_parallel(take, plan.out_dir, jobs, record)
    bar.close()
    refresh(plan)
    still = {n for _, n in plan.pending}            # a run another process finished meanwhile is not left over
    outcome.deferred = [n for _, n in queue if n in still]
    return outcome


def _train_parallel(take: Callable[[], "tuple[dict, str] | None"], out_dir: Path, jobs: int,
                    record: Callable[[str, str, str | None], None]) -> None:
    """`jobs` worker processes (fresh, each with cores // jobs torch threads); a new run is taken whenever a
    worker is free, until `take` has none left."""
    cores = usable_cores()
    with ProcessPoolExecutor(jobs, mp_context=E._worker_context(), initializer=E._worker_init,
                             initargs=(max(1, cores // jobs),)) as pool:
        running: dict = {}
        while True:
            while len(running) < jobs and (cn := take()) is not None:
                try:
                    running[pool.submit(train_one, cn[0], str(out_dir), cn[1])] = cn[1]
                except BrokenProcessPool:
                    record(cn[1], "failed", "(the worker pool broke before this run started; rerun to resume)")
            if not running:
                return
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                name = running.pop(f)
                try:
                    record(*f.result())
                except BrokenProcessPool:           # a worker died (out of memory, killed): say which run
                    record(name, "failed", "(a worker process died while training it; rerun to resume)")


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
        params = dict(t.params, profile=plan.profile, results_dir=_repo_relative(plan.out_dir))
        if "dataset" in params:
            params["seeds"] = plan.seeds.get((params["dataset"], params["model"]))
        else:                                       # every cell (Table 7): --seeds N, else each cell's default
            n = set(plan.seeds.values())
            params["seeds"] = n.pop() if len(n) == 1 else None
        out.append((t, NOTEBOOKS / t.notebook, Path(nb_dir) / f"{t.name}.ipynb", params))
    return out


def _repo_relative(path: "str | Path") -> str:
    """A folder relative to the repository when inside it (executed notebooks then hold no machine's path)."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)


def finish_page(path: Path, title: str | None = None) -> None:
    """Make an executed notebook a book page: hide the template's parameters cell and papermill's injected
    one (tag `remove-cell`: the page prints what it shows), and give the page its own title (the first
    heading), so that the six table pages differ in the contents."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if {"injected-parameters", "parameters"} & set(tags) and "remove-cell" not in tags:
            tags.append("remove-cell")
    first = next((c for c in nb["cells"] if c["cell_type"] == "markdown"), None)
    if title and first is not None and "".join(first["source"]).startswith("# "):
        lines = "".join(first["source"]).split("\n")
        first["source"] = "\n".join([f"# {title}", *lines[1:]]).splitlines(keepends=True)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


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
                finish_page(dst, page_title(t.name))
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

DATASET_NAMES = {"citeulike-t": "CiteULike", "foursquare-tky": "Foursquare-Tokyo",
                 "foursquare-nyc": "Foursquare-New York"}
MODEL_NAMES = {"cdae": "CDAE", "neumf": "NeuMF"}
METHOD_NAMES = {"teacher": "Teacher", "student": "Student", "rd": "RD", "cd": "CD", "bd": "BD", "ibd": "iBD"}


def page_title(target: str) -> str | None:
    """The title of a target's page in the book ('CiteULike with CDAE'); None: the template's own."""
    t = targets().get(target)
    p = dict(t.params) if t else {}
    if target.startswith("table-") and p:
        return f"{DATASET_NAMES[p['dataset']]} with {MODEL_NAMES[p['model']]}"
    if target in ("fig4", "fig5"):
        return (f"Figure {p['figure']}: items sampled and corrected, {MODEL_NAMES[p['model']]} on "
                f"{DATASET_NAMES[p['dataset']]}")
    return None


def select_runs(results_dir: "str | Path", profile: str, seeds: int | None = None) -> list[Run]:
    """The finished runs of one profile in a folder, made by the current protocol and training code (what
    `reproduce` counts as done), seeds 0..seeds-1 only when given; [] when there are none yet."""
    return [r for r in _profile_runs(results_dir, profile)
            if is_finished(r.result, r.config) and (seeds is None or r.config["seed"] < seeds)]


def stale_runs(results_dir: "str | Path", profile: str) -> list[Run]:
    """Result files of the profile that other training code (or an older protocol) made: never shown."""
    return [r for r in _profile_runs(results_dir, profile) if not is_finished(r.result, r.config)]


def _profile_runs(results_dir: "str | Path", profile: str) -> list[Run]:
    if not Path(results_dir).is_dir():
        return []
    try:
        runs = load_runs(results_dir)
    except ConfigError:                             # an empty folder
        return []
    return [r for r in runs if isinstance(r.config, dict) and r.config.get("profile") == profile]


def resolve_results_dir(results_dir: "str | Path | None", profile: str) -> Path:
    """A notebook's result folder: results/<profile> when None, a relative path taken from the repository."""
    if results_dir is None:
        return REPO / "results" / profile
    p = Path(results_dir)
    return p if p.is_absolute() else REPO / p


def command(profile: str, target: str, seeds: int | None = None) -> str:
    """The command that trains a target's missing runs and renders its page."""
    extra = f" --seeds {seeds}" if seeds is not None else ""
    return f"python -m ibd_lite reproduce --profile {profile} --only {target}{extra}"


@dataclass(frozen=True)
class Status:
    """How much of one table or figure is finished: runs and seeds of those planned, and the command that
    trains the rest. `seeds` are the seeds complete for every part: what the page shows."""

    title: str
    command: str
    planned_runs: int
    finished_runs: int
    planned_seeds: int
    seeds: tuple[int, ...]
    problem: str = ""               # why finished runs cannot be shown together (e.g. different budgets)
    each_run: bool = False          # every finished run is shown on its own (Table 7), not whole seeds
    warmups: str = ""               # report.warmup_note of the runs shown: seeds that mix warm-ups

    @property
    def ready(self) -> bool:
        """Can the page show something (a seed complete for every part; any run when each_run)?"""
        return (bool(self.seeds) or (self.each_run and self.finished_runs > 0)) and not self.problem

    @property
    def complete(self) -> bool:
        """Is every planned run finished?"""
        return self.ready and self.finished_runs == self.planned_runs

    @property
    def state(self) -> str:
        """'done', 'partial' (some seeds shown) or 'pending' (nothing to show yet)."""
        return "done" if self.complete else "partial" if self.ready else "pending"

    def progress(self) -> str:
        """'3 of 5 seeds (18 of 30 runs)'."""
        return (f"{len(self.seeds)} of {self.planned_seeds} seeds "
                f"({self.finished_runs} of {self.planned_runs} runs)")

    def note(self) -> str:
        """A Markdown paragraph: what this page shows, what is pending and the command that trains it, and a
        warning when the runs shown did not all continue from their seed's warm-up."""
        text = self._progress_note()
        if self.warmups and self.ready:
            text += (f"\n\n**Warm-ups differ.** In the runs shown, {self.warmups}. Deleting those seeds' result "
                     "files and re-running the command retrains them from one warm-up.")
        return text

    def _progress_note(self) -> str:
        run = f"\n\n```bash\n{self.command}\n```\n"
        if self.problem:
            title = self.title[:1].upper() + self.title[1:]
            return (f"**Cannot be shown yet.** {title}: {self.finished_runs} of {self.planned_runs} planned "
                    f"runs {_are(self.finished_runs)} finished, but they do not go together: {self.problem}")
        if self.complete:                   # each_run pages span cells with different numbers of seeds
            seeds = "" if self.each_run else f" ({self.planned_seeds} seed{'s' * (self.planned_seeds != 1)})"
            return f"All {self.planned_runs} planned runs of {self.title} are finished{seeds}."
        have = f"{self.finished_runs} of {self.planned_runs} planned runs of {self.title} {_are(self.finished_runs)}"
        if self.ready and self.each_run:
            return (f"**Partial results.** {have} finished; this page shows those, so its numbers will change. "
                    f"The rest trains with{run}")
        if self.ready:
            return (f"**Partial results.** {have} finished; this page shows the {len(self.seeds)} of "
                    f"{self.planned_seeds} planned seeds that are complete for every part "
                    f"({_seed_list(self.seeds)}), so its numbers will change. The rest trains with{run}")
        done = (f"{have.replace(' of ', ' of the ', 1)} finished, but no seed is complete for every part yet"
                if self.finished_runs else f"None of the {self.planned_runs} planned runs of {self.title} is "
                                           "finished yet")
        state = "In progress" if self.finished_runs else "Not run yet"
        return f"**{state}.** {done}, so there is nothing to show. The page fills in as they train, with{run}"


def _are(n: int) -> str:
    return "is" if n == 1 else "are"


def _seed_list(seeds: Sequence[int]) -> str:
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds))


def _status(title: str, cmd: str, required: set, have: set, problem: str = "", each_run: bool = False) -> Status:
    """A Status from the (part, seed) pairs planned and those finished."""
    seeds = sorted({s for _, s in required})
    complete = tuple(s for s in seeds if all((k, s) in have for k, t in required if t == s))
    return Status(title, cmd, len(required), len(required & have), len(seeds), complete, problem, each_run)


def _planned(dataset: str, model: str, seeds: int | None) -> int:
    return seeds or default_seeds(dataset, model)


def _seeds_arg(seeds: int | None, dataset: str, model: str) -> int | None:
    """--seeds for the command: only when it differs from the default."""
    return seeds if seeds and seeds != default_seeds(dataset, model) else None


def _nice(dataset: str, model: str) -> str:
    return f"{dataset} / {model.upper() if model == 'cdae' else 'NeuMF' if model == 'neumf' else model}"


def table_status(runs: Sequence[Run], dataset: str, model: str, profile: str,
                 seeds: int | None = None) -> tuple[Status, list[Run]]:
    """Table `dataset`/`model`: its Status, and its runs on the seeds complete for every row (what it shows)."""
    from .report import table_rows

    n, data = _planned(dataset, model, seeds), data_name(dataset, profile)
    mine = [r for r in runs if (r.config["dataset"], r.config["model"]) == (data, model) and r.config["seed"] < n
            and _is_default(r.config)]
    try:
        rows, problem = table_rows(mine, data, model), ""
    except ConfigError as e:
        rows, problem = {}, str(e)
    table_runs = {id(r): r for rs in rows.values() for r, _ in rs}
    have = {(r.config["method"], r.config["seed"]) for r in mine}
    st = _status(f"the {_nice(dataset, model)} table", command(profile, f"table-{dataset}-{model}",
                                                                _seeds_arg(seeds, dataset, model)),
                 {(m, s) for m in E.TABLE_METHODS for s in range(n)}, have, problem)
    shown = [r for r in table_runs.values() if r.config["seed"] in st.seeds] if st.ready else []
    return _with_warmups(st, shown), shown


def _with_warmups(st: Status, shown: Sequence[Run]) -> Status:
    """The Status with the warm-up warning of the runs a page shows (`report.warmup_note`)."""
    from .report import warmup_note

    return replace(st, warmups=warmup_note(shown))


def _is_default(c: dict) -> bool:
    from .report import is_table_config

    return is_table_config(c)


def _figure_target(kind: str, dataset: str, model: str, figure: int = 4) -> str:
    """The target that trains a figure's runs: the figure's own for the paper's cell, else that cell's table."""
    name = {"curves": "fig3", "figure6": "fig6"}.get(kind, f"fig{figure}")
    own = E.FIGURE_CELLS[kind][figure - 4 if kind == "rounds" else 0]
    return name if (dataset, model) == own else f"table-{dataset}-{model}"


def curves_status(runs: Sequence[Run], dataset: str, model: str, profile: str,
                  seeds: int | None = None) -> tuple[Status, list[Run]]:
    """Figure 3 (BD and iBD runs of a table, with test curves): its Status and the runs it shows."""
    n, data = _planned(dataset, model, seeds), data_name(dataset, profile)
    mine = [r for r in runs if (r.config["dataset"], r.config["model"]) == (data, model) and r.config["seed"] < n
            and r.config["method"] in ("bd", "ibd") and _is_default(r.config)
            and any("test" in h for h in r.result.get("history", []))]
    have = {(r.config["method"], r.config["seed"]) for r in mine}
    st = _status(f"Figure 3 ({_nice(dataset, model)})",
                 command(profile, _figure_target("curves", dataset, model), _seeds_arg(seeds, dataset, model)),
                 {(m, s) for m in ("bd", "ibd") for s in range(n)}, have)
    shown = [r for r in mine if r.config["seed"] in st.seeds]
    return _with_warmups(st, shown), shown


def rounds_status(runs: Sequence[Run], dataset: str, model: str, profile: str, seeds: int | None = None,
                  figure: int = 4) -> tuple[Status, list[Run]]:
    """Figures 4-5 (iBD table runs with per-user round logs): Status and the runs shown."""
    n, data = _planned(dataset, model, seeds), data_name(dataset, profile)
    mine = [r for r in runs if (r.config["dataset"], r.config["model"], r.config["method"]) == (data, model, "ibd")
            and r.config["seed"] < n and _is_default(r.config) and "rounds" in r.result]
    st = _status(f"Figure {figure} ({_nice(dataset, model)})",
                 command(profile, _figure_target("rounds", dataset, model, figure),
                         _seeds_arg(seeds, dataset, model)),
                 {("ibd", s) for s in range(n)}, {("ibd", r.config["seed"]) for r in mine})
    return st, [r for r in mine if r.config["seed"] in st.seeds]


GAMMAS = (0.1, 0.5, 0.9)


def gamma_status(runs: Sequence[Run], dataset: str, model: str, profile: str,
                 seeds: int | None = None) -> tuple[Status, list[Run]]:
    """Figure 6 (iBD over the 3 x 3 grid of distillation weights): Status and the runs on complete seeds."""
    n, data = _planned(dataset, model, seeds), data_name(dataset, profile)
    mine = [r for r in runs if (r.config["dataset"], r.config["model"], r.config["method"]) == (data, model, "ibd")
            and r.config["seed"] < n and r.config.get("ibd_variant", "full") == "full"
            and (r.config.get("gamma_ts"), r.config.get("gamma_st")) in {(a, b) for a in GAMMAS for b in GAMMAS}
            and _is_default(dict(r.config, gamma_ts=0.5, gamma_st=0.5))]
    target = _figure_target("figure6", dataset, model)
    cmd = (command(profile, target, _seeds_arg(seeds, dataset, model)) if target == "fig6" else
           f"python -m ibd_lite grid figure6 --profile {profile} --dataset {data} --model {model} "
           f"--seeds {' '.join(map(str, range(n)))} --out-dir results/{profile}")
    st = _status(f"Figure 6 ({_nice(dataset, model)})", cmd,
                 {((a, b), s) for a in GAMMAS for b in GAMMAS for s in range(n)},
                 {((r.config["gamma_ts"], r.config["gamma_st"]), r.config["seed"]) for r in mine})
    shown = [r for r in mine if r.config["seed"] in st.seeds]
    return _with_warmups(st, shown), shown


def timing_status(runs: Sequence[Run], profile: str, seeds: int | None = None) -> tuple[Status, list[Run]]:
    """Table 7 (the table runs' timings, every cell): Status and every finished table run (each is timed on
    its own, so partial cells are shown too)."""
    n_cell: dict[tuple[str, str], int] = {}
    for d in E.TABLE_DATASETS:
        for m in E.TABLE_MODELS:
            key = (data_name(d, profile), m)
            n_cell[key] = max(n_cell.get(key, 0), _planned(d, m, seeds))
    mine = [r for r in runs if (r.config["dataset"], r.config["model"]) in n_cell
            and r.config["seed"] < n_cell[r.config["dataset"], r.config["model"]] and _is_default(r.config)
            and isinstance(r.result.get("timing"), dict)]
    required = {((d, m, meth), s) for (d, m), k in n_cell.items() for meth in E.TABLE_METHODS for s in range(k)}
    have = {((r.config["dataset"], r.config["model"], r.config["method"]), r.config["seed"]) for r in mine}
    st = _status("Table 7", command(profile, "table7", seeds), required, have, each_run=True)
    return st, mine


def target_status(name: str, runs: Sequence[Run], profile: str, seeds: int | None = None) -> Status:
    """The Status of one reproduce target by name (table-..., fig3, fig4, fig5, fig6, table7)."""
    return target_runs(name, runs, profile, seeds)[0]


def target_runs(name: str, runs: Sequence[Run], profile: str,
                seeds: int | None = None) -> tuple[Status, list[Run]]:
    """The Status of one reproduce target by name and the runs its page shows."""
    t = targets().get(name)
    if t is None or t.notebook is None:
        raise ConfigError(f"unknown target {name!r}; valid: {', '.join(n for n, x in targets().items() if x.notebook)}")
    p = dict(t.params)
    if name == "table7":
        return timing_status(runs, profile, seeds)
    d, m = p["dataset"], p["model"]
    if name.startswith("table-"):
        return table_status(runs, d, m, profile, seeds)
    if name == "fig3":
        return curves_status(runs, d, m, profile, seeds)
    if name == "fig6":
        return gamma_status(runs, d, m, profile, seeds)
    return rounds_status(runs, d, m, profile, seeds, p["figure"])


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
    best = best_student(rows)
    return pairs + ([(best, "iBD-Student")] if best is not None and (best, "iBD-Student") not in pairs else [])


short_verdict = verdict_words             # the name the table template uses
SHORT_ROW = {"BD-Student": "BD-S"}      # the best-student cell names its student in a narrow column


def say(b: str, a: str, words: str) -> str:
    """'iBD-Student is ahead of CD' / 'is behind CD' / 'and CD are not distinguishable' from verdict words."""
    words = verdict_words(words)
    if words == "not distinguishable":
        return f"{b} and {a} are not distinguishable"
    return f"{b} is {words}{' of' if words == 'ahead' else ''} {a}"


def tables_overview(runs: Sequence[Run], profile: str, seeds: int | None = None,
                    n_boot: int = 10_000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Chapter 6's overview of Tables 1-6: per (dataset, model), seeds and runs done of planned, and for a
    complete table the paired H@50 comparisons iBD-S vs BD-S, iBD-T vs BD-T and iBD-S vs the best other
    student ('pending' otherwise; its cell names that student, which may be BD-Student, the same test as the
    first column). -> (display table, one line per comparison of the complete tables)."""
    from .report import comparisons, table_rows

    shown, tests = [], []
    for d in E.TABLE_DATASETS:
        for m in E.TABLE_MODELS:
            st, mine = table_status(runs, d, m, profile, seeds)
            rec = {"dataset": d, "model": m, "seeds": f"{len(st.seeds)}/{st.planned_seeds}",
                   "runs": f"{st.finished_runs}/{st.planned_runs}", "state": st.state}
            cols = {"iBD-S vs BD-S": ("BD-Student", "iBD-Student"), "iBD-T vs BD-T": ("BD-Teacher", "iBD-Teacher"),
                    "iBD-S vs best student": None}
            rec.update(dict.fromkeys(cols, "pending"))
            if st.complete:
                rows = table_rows(mine, data_name(d, profile), m)
                comp = comparisons(rows, metrics=("H@50",), pairs=spec_pairs(rows), n_boot=n_boot)
                cols["iBD-S vs best student"] = (best_student(rows), "iBD-Student")
                for _, c in comp.iterrows():
                    b, a = c["B vs A"].split(" vs ")
                    words = verdict_words(c["verdict"])
                    said = f"{c['change %']:+.1f} % ({'n.d.' if words.startswith('not') else words}"
                    for col in (k for k, v in cols.items() if v == (a, b)):
                        rec[col] = said + (f", {SHORT_ROW.get(a, a)})" if col == "iBD-S vs best student" else ")")
                        tests.append({"dataset": d, "model": m, "comparison": col, "A": a, "B": b,
                                      "mean A": c["A"], "B − A": c["B − A"], "lo": c["lo"], "hi": c["hi"],
                                      "change %": float(c["change %"]), "verdict": words, "seeds": int(c["seeds"])})
            shown.append(rec)
    cols = ["dataset", "model", "comparison", "A", "B", "mean A", "B − A", "lo", "hi", "change %", "verdict", "seeds"]
    return pd.DataFrame(shown), pd.DataFrame(tests, columns=cols)


def results_provenance(runs: Sequence[Run], results_dir: "str | Path") -> str:
    """How many runs a page read and from which folder, then their commits and their code fingerprints per
    base model (each model's training code has its own), with `report.mix_note` when they differ."""
    from .report import commits_and_prints, mix_note

    where = _repo_relative(results_dir)
    if not runs:
        return f"results: no finished run in {where}"
    commits, _ = commits_and_prints([r.result.get("provenance", {}) for r in runs])
    prints: dict[str, set[str]] = {}
    for r in runs:
        fp = r.result.get("provenance", {}).get("code_fingerprint", "none")
        prints.setdefault(str(r.config.get("model", "?")), set()).add(fp)
    note = mix_note(commits, sorted(max(prints.values(), key=len)))     # MIXED: one model has several
    return (f"results: {len(runs)} finished run{'s' * (len(runs) != 1)} in {where}\n"
            + textwrap.fill(' '.join(commits), 96, initial_indent="  commit(s) ", subsequent_indent="    ")
            + "\n  code fingerprint(s) "
            + ", ".join(f"{m} {' '.join(sorted(fps))}" for m, fps in sorted(prints.items()))
            + (f" ({note})" if note else ""))


ANALYSES = (("fig3", "Figure 3", "H@50 and N@50 every 10 epochs, BD vs iBD"),
            ("fig4", "Figure 4", "items sampled vs corrected per user, CDAE"),
            ("fig5", "Figure 5", "items sampled vs corrected per user, NeuMF"),
            ("fig6", "Figure 6", "H@50 over the 3 × 3 grid of distillation weights"),
            ("table7", "Table 7", "wall time of warm-up, distillation and prediction"))


def analyses_overview(runs: Sequence[Run], profile: str, seeds: int | None = None) -> pd.DataFrame:
    """Chapter 7's overview: per figure (and Table 7), what it shows, its cell, runs and seeds done of
    planned, and its state (done / partial / pending)."""
    recs = []
    every = targets()
    for name, title, what in ANALYSES:
        st, p = target_status(name, runs, profile, seeds), dict(every[name].params)
        cell = _nice(p["dataset"], p["model"]) if "dataset" in p else "all six tables"
        seeds_done = "–" if st.each_run else f"{len(st.seeds)}/{st.planned_seeds}"
        recs.append({"page": title, "shows": what, "cell": cell, "seeds": seeds_done,
                     "runs": f"{st.finished_runs}/{st.planned_runs}", "state": st.state, "target": name})
    return pd.DataFrame(recs)


def analyses_findings(runs: Sequence[Run], profile: str, seeds: int | None = None,
                      n_boot: int = 10_000) -> dict[str, str]:
    """Chapter 7 in a sentence per page: what each figure (and Table 7) shows on the seeds complete for it,
    with its numbers, by page title; a page without a complete seed says so."""
    out = {}
    every = targets()
    for name, title, _ in ANALYSES:
        st, mine = target_runs(name, runs, profile, seeds)
        p = dict(every[name].params)
        if not st.ready:
            out[title] = "no complete seed yet."
            continue
        n = len(st.seeds)
        on = f"{n} seed{'s' * (n > 1)}"
        if name == "table7":
            t = timing(mine)
            ratio = (t.xs("ibd", level="method")["distill_s"] / t.xs("bd", level="method")["distill_s"]).dropna()
            warm = (t["pretrain_s"] / t[list(TIMING_FIELDS)].sum(axis=1)).xs("bd", level="method")
            out[title] = (f"over {len(ratio)} (dataset, base model) cell{'s' * (len(ratio) != 1)}, iBD's "
                          f"distillation phase took {value_span(ratio, '.2f', '–')}× the wall time of BD's, and the "
                          f"warm-up was {value_span(100 * warm, '.0f', '–')} % of a BD run's time "
                          f"({st.finished_runs} runs, {', '.join(hardware(mine))}).")
            continue
        data, model = data_name(p["dataset"], profile), p["model"]
        if name == "fig3":
            df = curves(mine, data, model)
            last = last_epoch(df)
            out[title] = (f"at the last epoch ({int(df.epoch.max())}, {on}) iBD's student reaches H@50 "
                          f"{last['iBD', 'student', 'H@50']:.4f} against {last['BD', 'student', 'H@50']:.4f} "
                          f"for BD's, and the teachers {last['iBD', 'teacher', 'H@50']:.4f} (iBD) and "
                          f"{last['BD', 'teacher', 'H@50']:.4f} (BD).")
        elif name == "fig6":
            grid = gamma_grid(mine, data, model)
            cmp = gamma_comparisons(mine, data, model, n_boot=n_boot)
            out[title] = (f"with {on} per cell, {gamma_words(grid, cmp, 'student')}; "
                          f"{gamma_words(grid, cmp, 'teacher')}.")
        else:
            share = corrected_share(round_counts(mine, data, model)).iloc[:, -1]
            s = {side.split()[0]: float(v) for side, v in share.items()}
            out[title] = (f"of the items iBD distilled over the first ten rounds ({on}), the student had "
                          f"corrected a share {s['student']:.3f} at the next round's check and the teacher "
                          f"{s['teacher']:.3f}.")
    return out


def curves(runs: Sequence[Run], dataset: str, model: str) -> pd.DataFrame:
    """Figure 3: test metrics every eval_every epochs of the BD and iBD runs (default variants only), one line
    per (method, model, seed, epoch, metric)."""
    recs = []
    for r in runs:
        c = r.config
        if (c["dataset"], c["model"]) != (dataset, model) or c["method"] not in ("bd", "ibd") or not _is_default(c):
            continue
        for h in r.result["history"]:
            for role, ms in h.get("test", {}).items():
                recs += [{"method": METHOD_NAMES[c["method"]], "model": role, "seed": c["seed"],
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
        if not _is_default(c):
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


def last_epoch(df: pd.DataFrame) -> pd.Series:
    """Figure 3: seed means of the `curves` at their last recorded epoch, by (method, model, metric)."""
    return df[df.epoch == df.epoch.max()].groupby(["method", "model", "metric"])["value"].mean()


def corrected_share(df: pd.DataFrame) -> pd.DataFrame:
    """Figures 4-5: per side, the items sampled and corrected summed over the users of `round_counts`, and
    the share corrected (corrected / sampled)."""
    share = df.groupby("side", sort=False)[["sampled", "corrected"]].sum()
    share["corrected / sampled"] = share["corrected"] / share["sampled"]
    return share


def _gamma_runs(runs: Sequence[Run], dataset: str, model: str) -> list[Run]:
    """The full-iBD runs of Figure 6 for (dataset, model); refuses runs that differ in anything but the
    gammas, the seed and the device."""
    mine = [r for r in runs if r.config.get("ibd_variant", "full") == "full"
            and (r.config["dataset"], r.config["model"], r.config["method"]) == (dataset, model, "ibd")]
    if not mine:
        raise ConfigError(f"no iBD runs for {dataset}/{model}: run `python -m ibd_lite reproduce --only fig6` first")
    rest = {json.dumps({k: v for k, v in r.config.items() if k not in ("gamma_ts", "gamma_st", "seed", "device")},
                       sort_keys=True) for r in mine}
    if len(rest) > 1:
        raise ConfigError(f"the iBD runs of {dataset}/{model} differ in more than the gammas (e.g. budgets); keep "
                          "one profile's runs per folder")
    return mine


def gamma_grid(runs: Sequence[Run], dataset: str, model: str, metric: str = "H@50") -> pd.DataFrame:
    """Figure 6: seed means of a test metric per (γ_T→S, γ_S→T, role) of the iBD runs (`_gamma_runs`)."""
    mine = _gamma_runs(runs, dataset, model)
    recs = [{"gamma_ts": r.config["gamma_ts"], "gamma_st": r.config["gamma_st"], "role": role,
             "seed": r.config["seed"], metric: r.result["models"][role]["test"][metric]}
            for r in mine for role in ("teacher", "student")]
    df = pd.DataFrame(recs)
    return df.groupby(["role", "gamma_ts", "gamma_st"], as_index=False).agg(**{metric: (metric, "mean"),
                                                                               "seeds": ("seed", "nunique")})


def gamma_comparisons(runs: Sequence[Run], dataset: str, model: str, metric: str = "H@50",
                      n_boot: int = 10_000) -> pd.DataFrame:
    """Figure 6, paired (SPEC §8): each of the eight other cells against the default (0.5, 0.5), per role, on
    the seeds both have. One line per (role, γ_T→S, γ_S→T): the default's and the cell's mean, the change in
    % of the default, the 95% CI of the difference (text, and lo / hi), the verdict (ahead, behind, not
    distinguishable) and the number of seeds."""
    rows: dict[str, list[tuple[Run, str]]] = {}
    for r in _gamma_runs(runs, dataset, model):
        for role in ("student", "teacher"):
            rows.setdefault(f"{role} {r.config['gamma_ts']} {r.config['gamma_st']}", []).append((r, role))
    recs = []
    for role in ("student", "teacher"):
        default = f"{role} 0.5 0.5"
        if default not in rows:
            raise ConfigError(f"Figure 6 of {dataset}/{model} has no default cell (0.5, 0.5): run `python -m "
                              "ibd_lite reproduce --only fig6` first")
        for a, b in ((a, b) for a in GAMMAS for b in GAMMAS if (a, b) != (0.5, 0.5)):
            if f"{role} {a} {b}" not in rows:
                continue
            c = compare(rows, default, f"{role} {a} {b}", metric, n_boot)
            recs.append({"role": role, "gamma_ts": a, "gamma_st": b, "default": c["mean_a"], "cell": c["mean_b"],
                         "change %": c["rel_pct"] if c["rel_pct"] is not None else np.nan,
                         "95% CI": ci_text(c["lo"], c["hi"]), "lo": c["lo"], "hi": c["hi"],
                         "verdict": verdict_words(c["verdict"]), "seeds": len(c["seeds"])})
    return pd.DataFrame(recs)


def gamma_default(grid: pd.DataFrame, role: str) -> float:
    """H@50 of `role` in the default cell (0.5, 0.5) of a `gamma_grid`."""
    g = grid[(grid.role == role) & (grid.gamma_ts == 0.5) & (grid.gamma_st == 0.5)]
    if g.empty:
        raise ConfigError(f"the gamma grid has no default cell (0.5, 0.5) for the {role}: run the figure6 grid")
    return float(g["H@50"].iloc[0])


def gamma_tied(grid: pd.DataFrame, role: str) -> bool:
    """Whether `role` has the same H@50 in every cell of a `gamma_grid` (nothing to compare, no best cell)."""
    return grid[grid.role == role]["H@50"].nunique() == 1


def gamma_words(grid: pd.DataFrame, cmp: pd.DataFrame, role: str) -> str:
    """Figure 6 for one role in words: the best cell and the default with the best cell's paired verdict, and
    how many of the eight other cells are ahead of the default, behind it or not distinguishable; or that the
    nine cells tie (then no cell is named best)."""
    g = grid[grid.role == role]
    best = g.loc[g["H@50"].idxmax()]
    mid = gamma_default(grid, role)
    if gamma_tied(grid, role):
        return f"the {role}'s H@50 is the same in all nine cells ({mid:.4f})"
    c = cmp[cmp.role == role]
    b = c[(c.gamma_ts == best.gamma_ts) & (c.gamma_st == best.gamma_st)]
    vs = ("" if b.empty else f"; paired: {b['change %'].iloc[0]:+.1f} %, 95% CI of the difference "
          f"{b['95% CI'].iloc[0]}, {b['verdict'].iloc[0]}")
    k = {v: int((c.verdict == v).sum()) for v in ("ahead", "behind", "not distinguishable")}
    return (f"the {role}'s best cell is $(\\gamma_{{T\\to S}}, \\gamma_{{S\\to T}}) = ({best.gamma_ts}, "
            f"{best.gamma_st})$ with H@50 {best['H@50']:.4f} (the default $(0.5, 0.5)$: {mid:.4f}{vs}); of "
            f"the eight other cells, {k['ahead']} {_are(k['ahead'])} ahead of the default, {k['behind']} behind "
            f"and {k['not distinguishable']} not distinguishable")


TIMING_FIELDS = ("pretrain_s", "distill_s", "predict_s")


def machine_state(timing: dict) -> str:
    """How busy the machine was during a run, from its timing record: "idle" when the load average at both ends
    stayed below the run's own threads + 0.5, "shared" otherwise, "not recorded" for runs made before the load
    was recorded."""
    load, threads = timing.get("load"), timing.get("threads")
    if not load or threads is None or any(x is None for x in load):
        return "not recorded"
    return "idle" if max(load) < threads + 0.5 else "shared"


def timing(runs: Sequence[Run]) -> pd.DataFrame:
    """Table 7: mean seconds of the pre-train, distillation and prediction phases per (dataset, model,
    method) of the table runs, the mean CPU seconds of the run (NaN where not recorded) and how busy the
    machine was (`machine_state`: one word, or "mixed")."""
    recs = _timing_records(runs)
    if not recs:
        raise ConfigError("no table runs to time: run `python -m ibd_lite reproduce --only table7` first")
    df = pd.DataFrame(recs)
    df["method"] = pd.Categorical(df["method"], E.TABLE_METHODS, ordered=True)
    g = df.groupby(["dataset", "model", "method"], observed=True)
    out = g[[*TIMING_FIELDS, "cpu_s"]].mean()
    out["machine"] = g["machine"].agg(lambda xs: xs.iloc[0] if xs.nunique() == 1 else "mixed")
    out["runs"] = g.size()
    return out


def cpu_spread(runs: Sequence[Run]) -> tuple[float, tuple[str, str, str]] | None:
    """The largest ratio of slowest to fastest CPU seconds between seeds of one (dataset, model, method)
    table cell, and that cell; None when no cell has two runs that recorded it. Seeds of a cell do the
    same work, so a large ratio says the machines (or their neighbours) ran at different speeds."""
    df = pd.DataFrame(_timing_records(runs))
    if df.empty:
        return None
    g = df.dropna(subset=["cpu_s"]).groupby(["dataset", "model", "method"])["cpu_s"]
    ratio = (g.max() / g.min())[g.size() >= 2]
    return (float(ratio.max()), ratio.idxmax()) if len(ratio) else None


def machine_counts(runs: Sequence[Run]) -> dict[str, int]:
    """How many table runs were timed on an idle machine, a shared one, or before the load was recorded."""
    states = [rec["machine"] for rec in _timing_records(runs)]
    return {k: states.count(k) for k in ("idle", "shared", "not recorded")}


def _timing_records(runs: Sequence[Run]) -> list[dict]:
    """One record per table run: its keys, hardware, phase times, CPU seconds and `machine_state`."""
    from .report import is_table_config

    return [{"dataset": r.config["dataset"], "model": r.config["model"], "method": r.config["method"],
             "seed": r.config["seed"], "hardware": _device_name(r),
             **{k: r.result["timing"].get(k) for k in TIMING_FIELDS},
             "cpu_s": r.result["timing"].get("cpu_s", np.nan), "machine": machine_state(r.result["timing"])}
            for r in runs if is_table_config(r.config)]


def hardware(runs: Sequence[Run]) -> list[str]:
    """The distinct device names the runs were made on."""
    return sorted({_device_name(r) for r in runs})


def _device_name(r: Run) -> str:
    """A run's recorded device name (runs made before the singular was fixed said "(1 threads)")."""
    return r.result.get("provenance", {}).get("device_name", "unknown").replace("(1 threads)", "(1 thread)")
