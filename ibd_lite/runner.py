"""Run one experiment from a Config: check every input and folder, load data, dispatch to the method, add
timing and provenance, and write the result JSON atomically under a per-run lock. A finished result of the
same config, made by the same training code, is not redone."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
from filelock import FileLock, Timeout

from .codec import compact
from .config import Config, make_config
from .data import load_split
from .download import clean_stale_tmp
from .errors import ConfigError, IBDError
from .methods import Context, run_alone, run_bd, run_cd, run_rd, seed_everything
from .provenance import REPO, code_fingerprint, load_average, provenance, usable_cores
from .sampling import UnobservedSampler

# Bumped whenever the training protocol changes what a config's result means; older files are redone.
RESULT_SCHEMA = 3


def default_cache_dir() -> Path:
    """Pre-trained checkpoints: $IBD_CACHE_DIR, else .cache/ibd_lite in the repository."""
    return Path(os.environ.get("IBD_CACHE_DIR", REPO / ".cache" / "ibd_lite"))


def run(config: "Config | dict[str, Any] | None" = None, out: "str | Path | None" = None, *,
        progress: bool = True, cache: bool = True, force: bool = False, **overrides: Any) -> dict:
    """Run one experiment and return its result dict (config, metrics, history, timing, provenance).

    `config` is a Config or a dict of its fields; keyword overrides are applied on top. Every value and
    folder is checked before any work. With `out`, the JSON is written atomically there under the lock
    `<out>.lock`, and an existing result for the same config and code is returned as is.
    """
    cfg = _to_config(config, overrides)
    cache_dir = default_cache_dir() if cache else None
    prepare_folders(out, cache_dir)
    if out is None:
        return _execute(cfg, None, progress, cache_dir)
    return run_at(cfg, Path(out), progress=progress, cache_dir=cache_dir, force=force)[1]


def run_at(cfg: Config, out: Path, *, progress: bool = True, cache_dir: Path | None = None, force: bool = False,
           wait: bool = True) -> tuple[str, dict | None]:
    """Run a resolved config into `out` under its lock -> (status, result).

    status: "finished" (already on disk, or finished by another process while we waited), "trained", or
    "locked" (another process holds the run and `wait` is False; result None). Folders are not probed here
    (see `prepare_folders`).
    """
    if not force and (done := finished_result(out, cfg.to_dict())) is not None:
        return "finished", done
    lock = FileLock(lock_path(out))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            return "locked", None
        print(f"waiting for another process that is running {out} (it holds {lock_path(out)})", file=sys.stderr)
        lock.acquire()
    try:
        if not force and (done := finished_result(out, cfg.to_dict(), warn=False)) is not None:
            return "finished", done
        return "trained", _execute(cfg, out, progress, cache_dir)
    finally:
        lock.release()


def lock_path(out: "str | Path") -> Path:
    """The lock file of a result path: `<out>.lock`."""
    return Path(f"{out}.lock")


def _execute(cfg: Config, out: Path | None, progress: bool, cache_dir: Path | None) -> dict:
    """Load the split, check the item-count limits, train, and write the result (strict JSON)."""
    t0, cpu0, load0 = time.perf_counter(), time.process_time(), load_average()
    split = load_split(cfg.dataset, cfg.data_dir, cfg.min_user_interactions, seed=cfg.seed)
    check_item_counts(cfg, split)
    device = torch.device(cfg.device)
    seed_everything(cfg.seed)
    ctx = Context(cfg, split, device, UnobservedSampler(split, device), progress, cache_dir)
    if cfg.method in ("teacher", "student"):
        body = run_alone(ctx, cfg.method)
    elif cfg.method == "rd":
        body = run_rd(ctx)
    elif cfg.method == "cd":
        body = run_cd(ctx)
    else:
        body = run_bd(ctx, improved=cfg.method == "ibd")
    result = {"schema": RESULT_SCHEMA, "config": cfg.to_dict(), "dataset": split.summary(), **body,
              "provenance": provenance(device, cfg.model)}
    result["timing"]["total_s"] = time.perf_counter() - t0
    # How busy the machine was: CPU seconds of this process (all its threads) next to the wall time, and the
    # load average at both ends against the usable cores. Table 7 uses them to tell idle timings from shared.
    result["timing"].update(cpu_s=time.process_time() - cpu0, threads=torch.get_num_threads(),
                            cores=usable_cores(), load=[load0, load_average()])
    result = compact(result)              # measured floats at 6 significant digits: a store that fits in git
    check_finite_result(result)
    if out is not None:
        save_result(out, result)
    return result


def check_item_counts(cfg: Config, split: Any) -> None:
    """Every K, top_n and rd_k fit the split's items: checked right after loading, before any training."""
    for k in cfg.ks:
        if k > split.n_items:
            raise ConfigError(f"K={k} is out of range for {cfg.dataset}: each K must be in [1, {split.n_items}]")
    if cfg.top_n > split.n_items:
        raise ConfigError(f"top_n={cfg.top_n} is out of range for {cfg.dataset}: it must be in [1, {split.n_items}]")
    max_train = int(split.train_counts.max())
    if cfg.rd_k > split.n_items - max_train:
        raise ConfigError(f"rd_k={cfg.rd_k} is out of range for {cfg.dataset}: RD distils the teacher's top-rd_k "
                          f"unobserved items of every user, so rd_k must be in [1, {split.n_items - max_train}] "
                          f"({split.n_items} items, a user has up to {max_train} training items)")


def _to_config(config, overrides: dict[str, Any]) -> Config:
    if config is None:
        return make_config(**overrides)
    if isinstance(config, Config):
        d = config.to_dict()
    elif isinstance(config, dict):
        d = dict(config)
    else:
        raise ConfigError(f"config must be a Config or a dict, got {type(config).__name__}")
    d.update(overrides)
    return make_config(**d)


# ---------------------------------------------------------------- folders: proven writable, stale files removed

def prepare_folders(out: "str | Path | None", cache_dir: Path | None) -> None:
    """Prove the result's folder and the cache folder writable (seconds, not hours, for a bad path) and
    remove temporary files left there by killed processes."""
    if out is not None:
        out = Path(out)
        if out.is_dir():
            raise ConfigError(f"out={str(out)!r} is a directory: give the result a file path, "
                              f"e.g. --out {out}/run.json")
        ensure_writable(out.parent, f"the result's folder (out={str(out)!r})",
                        "choose an --out path in a writable folder")
        clean_stale_tmp(out.parent)
    if cache_dir is not None:
        ensure_writable(cache_dir, f"the checkpoint cache folder {str(cache_dir)!r} (IBD_CACHE_DIR)",
                        "set IBD_CACHE_DIR to a writable folder, or run without the cache (--no-cache, cache=False)")
        clean_stale_tmp(cache_dir)


def ensure_writable(folder: Path, what: str, fix: str) -> None:
    """Create `folder` if needed and create/remove a probe file in it; ConfigError naming `what` and `fix`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".probe.{os.getpid()}.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker else f"{e.strerror or e} in {folder}"
        raise ConfigError(f"cannot write to {what}: {why}; {fix}") from e


# ---------------------------------------------------------------- result files

def write_json(path: "str | Path", obj: Any) -> None:
    """Write strict JSON to a temporary file beside `path`, then rename it into place (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:      # compact: per-user logs are long; no NaN/Infinity tokens
            json.dump(obj, f, separators=(",", ":"), default=_json_default, allow_nan=False)
        os.chmod(tmp, 0o644)              # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_result(out: Path, result: dict) -> None:
    """Write the result; when that fails (disk full, permissions), keep a rescue copy in the system's temp
    folder and raise an IBDError naming both paths and the fix: a trained result is never lost silently."""
    try:
        write_json(out, result)
        return
    except OSError as e:
        err = e
    rescue = Path(tempfile.gettempdir()) / f"ibd_lite-rescue-{os.getpid()}-{out.name}"
    try:
        write_json(rescue, result)
        kept = f"the trained result was saved to {rescue}; fix the problem, then move it there (mv {rescue} {out})"
    except OSError as e2:
        kept = f"saving a rescue copy to {rescue} failed too ({e2.strerror or e2}): the result is lost"
    raise IBDError(f"cannot write the result to {out}: {err.strerror or err}; {kept}. Free disk space or fix the "
                   f"permissions of {out.parent} (or choose another --out)") from err


def check_finite_result(result: dict) -> None:
    """Refuse a result holding NaN or infinity anywhere (a diverged metric is an error, not a number)."""
    for where, value in _nonfinite(result, ""):
        raise IBDError(f"the result is not valid: {where.lstrip('.')} is {value}; training diverged or a metric "
                       "could not be computed. Lower the learning rate or the distillation weights and run again")


def _nonfinite(obj: Any, where: str) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, float):
        if not math.isfinite(obj):
            yield where, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _nonfinite(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        if obj and all(isinstance(v, int) for v in obj):      # long per-user rank lists: nothing to check
            return
        for i, v in enumerate(obj):
            yield from _nonfinite(v, f"{where}[{i}]")
    elif isinstance(obj, torch.Tensor) and obj.is_floating_point() and not bool(torch.isfinite(obj).all()):
        yield where, "a tensor with non-finite values"


def is_finished(result: dict | None, config: dict) -> bool:
    """Is `result` a finished run of exactly this config under the current protocol and training code?"""
    return (result is not None and result.get("schema") == RESULT_SCHEMA and result.get("config") == config
            and _fingerprint_of(result) == code_fingerprint(config.get("model")))


def finished_result(path: "str | Path", config: dict, warn: bool = True) -> dict | None:
    """The finished result at `path` for this config, or None; a result of the same config made by other
    training code is not reused, with a one-line warning saying so."""
    done = load_result(path)
    if is_finished(done, config):
        return done
    if warn and isinstance(done, dict) and done.get("schema") == RESULT_SCHEMA and done.get("config") == config:
        warnings.warn(f"{Path(path).name} was made by other training code (fingerprint {_fingerprint_of(done)}, "
                      f"now {code_fingerprint(config.get('model'))}): it is redone", stacklevel=3)
    return None


def _fingerprint_of(result: dict) -> str | None:
    prov = result.get("provenance")
    return prov.get("code_fingerprint") if isinstance(prov, dict) else None


def load_result(path: "str | Path") -> dict | None:
    """A result file's contents, or None when it is missing or unreadable (it will be redone)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
