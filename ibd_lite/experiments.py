"""Grids of runs for the paper's tables and figures, resumable: each run is one JSON file named
after its config, written atomically when it finishes; a finished file is never redone.

    python -m ibd_lite grid table --dataset citeulike-t --model cdae --profile quick --seeds 0 1 2
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from tqdm.auto import tqdm

from .config import make_config
from .errors import ConfigError, choice_error
from .provenance import usable_cores
from .runner import clean_stale_tmp, default_cache_dir, ensure_writable, prepare_folders, run_at

METRICS = ("H@50", "H@100", "N@50", "N@100")
# Table rows (SPEC §7): (row label, method, which model of the run)
TABLE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("Teacher", "teacher", "teacher"), ("Student", "student", "student"),
    ("RD", "rd", "student"), ("CD", "cd", "student"),
    ("BD-Teacher", "bd", "teacher"), ("BD-Student", "bd", "student"),
    ("iBD-Teacher", "ibd", "teacher"), ("iBD-Student", "ibd", "student"),
)
TABLE_METHODS: tuple[str, ...] = tuple(dict.fromkeys(m for _, m, _ in TABLE_ROWS))   # teacher ... ibd, in order
TABLE_DATASETS = ("citeulike-t", "foursquare-tky", "foursquare-nyc")
TABLE_MODELS = ("cdae", "neumf")
EXPERIMENTS = ("table", "ablation", "figure6", "direction")
# Subsets of the table runs behind Figure 3 (curves) and Figures 4-5 (rounds): `reproduce` uses them.
FIGURE_EXPERIMENTS = ("curves", "rounds")
# The paper's choice of (dataset, model) for the figures (SPEC §7); other profiles than ci use these defaults.
FIGURE_CELLS: dict[str, tuple[tuple[str, str], ...]] = {
    "curves": (("citeulike-t", "cdae"),),                                  # Figure 3: BD vs iBD test curves
    "rounds": (("foursquare-nyc", "cdae"), ("foursquare-tky", "neumf")),   # Figures 4-5: per-user round logs
    "figure6": (("citeulike-t", "neumf"),),                                # Figure 6: gamma grid
}
# Not in the paper: probes of chapter 2's budget on its (dataset, model). The student trained alone with twice
# the profile's total budget, and with 2.5 and 5 times its learning rate (at converged, 5e-3 and 1e-2: above
# SPEC §3's grid, whose top, 2e-3, the tuning chose): do its creeping curves level off with more epochs, or with
# larger steps? `budget-distill` trains the distilled methods (RD, CD, BD, iBD) with twice the total budget too.
PROBE_EXPERIMENTS = ("budget", "budget-distill")
PROBE_CELLS: dict[str, tuple[tuple[str, str], ...]] = {"budget": (("citeulike-t", "cdae"),),
                                                        "budget-distill": (("citeulike-t", "cdae"),)}
DISTILL_METHODS: tuple[str, ...] = ("rd", "cd", "bd", "ibd")
BUDGET_LR_FACTORS: tuple[float, ...] = (2.5, 5.0)


def run_name(cfg_dict: dict[str, Any]) -> str:
    """Stable file name of a run: readable prefix plus a hash of the full config."""
    h = hashlib.sha256(json.dumps(cfg_dict, sort_keys=True).encode()).hexdigest()[:10]
    return f"{cfg_dict['dataset']}-{cfg_dict['model']}-{cfg_dict['method']}-{cfg_dict['profile']}-s{cfg_dict['seed']}-{h}.json"


def run_grid(configs: Iterable[dict[str, Any]], out_dir: "str | Path" = "results", progress: bool = True,
             jobs: int = 1, on_done: Callable[[Path, str], None] | None = None) -> list[dict]:
    """Run every config (skipping finished ones) and return the results in order.

    Every config and folder is checked before any work. Each run trains under the lock `<file>.lock`: a run
    that another process holds (a second grid on the same folder) is skipped for now and come back to at the
    end (wait for it, then load its result), so no run is trained twice. `jobs` > 1 runs that many worker
    processes, each with max(1, cores // jobs) torch threads. `on_done(path, status)` is called once per run,
    status "trained" (here) or "finished" (on disk already, or finished by another process).
    """
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(f"jobs={jobs!r} is out of range: it must be an integer >= 1 (worker processes)")
    cfgs = [make_config(**c) for c in configs]
    out_dir, cache_dir = Path(out_dir), default_cache_dir()
    ensure_writable(out_dir, f"the grid's folder (out_dir={str(out_dir)!r})", "choose a writable --out-dir")
    clean_stale_tmp(out_dir)
    prepare_folders(None, cache_dir)
    paths = [out_dir / run_name(c.to_dict()) for c in cfgs]
    results: list[dict | None] = [None] * len(cfgs)
    later: list[int] = []
    bar = tqdm(total=len(cfgs), desc="grid", disable=not progress)

    def record(i: int, status: str, result: dict | None) -> None:
        if status == "locked":
            later.append(i)
            return
        results[i] = result
        bar.update()
        if on_done is not None:
            on_done(paths[i], status)

    if jobs == 1:
        for i, c in enumerate(cfgs):
            bar.set_postfix_str(f"{c.dataset} {c.model} {c.method} seed {c.seed}")
            record(i, *run_at(c, paths[i], progress=False, cache_dir=cache_dir, wait=False))
    else:
        _run_parallel(cfgs, paths, cache_dir, jobs, record)
    for i in sorted(later):                         # runs another process held: wait for them, then load
        record(i, *run_at(cfgs[i], paths[i], progress=False, cache_dir=cache_dir, wait=True))
    bar.close()
    return results


def _run_parallel(cfgs: list, paths: list[Path], cache_dir: Path, jobs: int,
                  record: Callable[[int, str, dict | None], None]) -> None:
    """Run configs in `jobs` spawned worker processes that split the cores between them."""
    cores = usable_cores()
    pool = ProcessPoolExecutor(jobs, mp_context=_worker_context(), initializer=_worker_init,
                               initargs=(max(1, cores // jobs),))
    try:
        futures = {pool.submit(run_at, c, p, progress=False, cache_dir=cache_dir, wait=False): i
                   for i, (c, p) in enumerate(zip(cfgs, paths))}
        for f in as_completed(futures):
            record(futures[f], *f.result())
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _worker_context() -> multiprocessing.context.BaseContext:
    """Fresh worker processes, never forks of this one (torch's threads and CUDA do not survive a fork):
    a fork server that imports the library once where available, else spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["ibd_lite.experiments"])
    return ctx


def _worker_init(threads: int) -> None:
    """A grid worker uses its share of the cores (no oversubscription)."""
    import torch

    torch.set_num_threads(threads)


def experiment_configs(name: str, *, profile: str = "quick", dataset: str | None = None,
                       model: str | None = None, seeds: Sequence[int] = (0, 1, 2), device: str = "auto",
                       **overrides: Any) -> list[dict[str, Any]]:
    """The configs of a named experiment (see EXPERIMENTS, FIGURE_EXPERIMENTS and PROBE_EXPERIMENTS).

    table / ablation / direction / figure6 run every table (dataset, model) unless restricted; curves (the BD
    and iBD table runs behind Figure 3) and rounds (the iBD table runs behind Figures 4-5) default to the
    paper's figure cells; budget (the student alone at twice the total budget and at
    BUDGET_LR_FACTORS times its learning rate) and budget-distill (each of DISTILL_METHODS at twice the total
    budget) default to chapter 2's cell. At the ci profile every dataset is the synthetic one.
    """
    known = EXPERIMENTS + FIGURE_EXPERIMENTS + PROBE_EXPERIMENTS
    if name not in known:
        raise choice_error("experiment", name, known)
    base = dict(profile=profile, device=device, **overrides)
    cells = _cells(name, profile, dataset, model)
    if name == "table":
        return [dict(base, dataset=d, model=m, method=meth, seed=s)
                for d, m in cells for s in seeds for meth in TABLE_METHODS]
    if name in ("curves", "rounds"):
        methods = ("bd", "ibd") if name == "curves" else ("ibd",)
        return [dict(base, dataset=d, model=m, method=meth, seed=s)
                for d, m in cells for s in seeds for meth in methods]
    if name == "budget":
        return [dict(base, dataset=d, model=m, method="student", seed=s, **v) for d, m in cells for s in seeds
                for v in _budget_variants(dict(base, dataset=d, model=m))]
    if name == "budget-distill":
        return [dict(base, dataset=d, model=m, method=meth, seed=s, epochs=_doubled(dict(base, dataset=d, model=m)))
                for d, m in cells for s in seeds for meth in DISTILL_METHODS]
    if name == "ablation":
        return [dict(base, dataset=d, model=m, seed=s, **v) for d, m in cells for s in seeds
                for v in (dict(method="bd"), dict(method="ibd", ibd_variant="no-carry"), dict(method="ibd"))]
    if name == "direction":
        return [dict(base, dataset=d, model=m, seed=s, method="bd", bd_direction=dirn)
                for d, m in cells for s in seeds for dirn in ("paper", "released")]
    grid = (0.1, 0.5, 0.9)                           # figure6
    return [dict(base, dataset=d, model=m, seed=s, method="ibd", gamma_ts=a, gamma_st=b)
            for d, m in cells for s in seeds for a in grid for b in grid]


def _budget_variants(base: dict[str, Any]) -> list[dict[str, Any]]:
    """The `budget` probe's overrides of one cell: twice the profile's total epochs (the warm-up unchanged, so
    the probe continues from the table runs' warm-up), then each larger student learning rate."""
    c = make_config(**dict(base, method="student"))
    return [dict(epochs=_doubled(base))] + [dict(lr_student=round(f * c.lr_student, 12)) for f in BUDGET_LR_FACTORS]


def _doubled(base: dict[str, Any]) -> int:
    """The epochs after the warm-up that double a cell's total budget (warm-up + epochs) at its profile."""
    c = make_config(**dict(base, method="student"))
    return 2 * (c.pretrain_epochs + c.epochs) - c.pretrain_epochs


def _cells(name: str, profile: str, dataset: str | None, model: str | None) -> list[tuple[str, str]]:
    """(dataset, model) pairs of an experiment: the given ones, else the figure's or probe's cells or every
    table cell."""
    if name in ("curves", "rounds") + PROBE_EXPERIMENTS and dataset is None and model is None:
        pairs = list({**FIGURE_CELLS, **PROBE_CELLS}[name])
    else:
        datasets = [dataset] if dataset else list(TABLE_DATASETS)
        pairs = [(d, m) for d in datasets for m in ([model] if model else TABLE_MODELS)]
    if profile == "ci" and dataset is None:          # ci: synthetic data stands in for every dataset
        pairs = list(dict.fromkeys(("synthetic", m) for _, m in pairs))
    return pairs


def run_experiment(name: str, out_dir: "str | Path" = "results", progress: bool = True, jobs: int = 1,
                   on_done: Callable[[Path, str], None] | None = None, **kw: Any) -> list[dict]:
    """Run a named experiment grid (resumable, safe to run from several processes) and return its results."""
    return run_grid(experiment_configs(name, **kw), out_dir, progress, jobs=jobs, on_done=on_done)
