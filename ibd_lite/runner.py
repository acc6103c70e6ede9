"""Run one experiment from a Config: load data, dispatch to the method, add timing and provenance,
and write the result JSON atomically. A finished result with the same config is not redone."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .config import Config, make_config
from .data import load_split
from .errors import ConfigError
from .methods import Context, run_alone, run_bd, run_cd, run_rd, seed_everything
from .provenance import REPO, provenance
from .sampling import UnobservedSampler

# Bumped whenever the training protocol changes what a config's result means; older files are redone.
RESULT_SCHEMA = 3


def default_cache_dir() -> Path:
    """Pre-trained checkpoints: $IBD_CACHE_DIR, else .cache/ibd_lite in the repository."""
    return Path(os.environ.get("IBD_CACHE_DIR", REPO / ".cache" / "ibd_lite"))


def run(config: "Config | dict[str, Any] | None" = None, out: "str | Path | None" = None, *,
        progress: bool = True, cache: bool = True, force: bool = False, **overrides: Any) -> dict:
    """Run one experiment and return its result dict (config, metrics, history, timing, provenance).

    `config` is a Config or a dict of its fields; keyword overrides are applied on top. With `out`,
    the JSON is written atomically there, and an existing result for the same config is returned as is.
    """
    cfg = _to_config(config, overrides)
    if out is not None and not force:
        done = load_result(out)
        if is_finished(done, cfg.to_dict()):
            return done
    t0 = time.perf_counter()
    split = load_split(cfg.dataset, cfg.data_dir, cfg.min_user_interactions, seed=cfg.seed)
    for k in cfg.ks:
        if k > split.n_items:
            raise ConfigError(f"K={k} is out of range for {cfg.dataset}: each K must be in [1, {split.n_items}]")
    if cfg.top_n > split.n_items:
        raise ConfigError(f"top_n={cfg.top_n} is out of range for {cfg.dataset}: it must be in [1, {split.n_items}]")
    device = torch.device(cfg.device)
    seed_everything(cfg.seed)
    ctx = Context(cfg, split, device, UnobservedSampler(split, device), progress,
                  default_cache_dir() if cache else None)
    if cfg.method in ("teacher", "student"):
        body = run_alone(ctx, cfg.method)
    elif cfg.method == "rd":
        body = run_rd(ctx)
    elif cfg.method == "cd":
        body = run_cd(ctx)
    else:
        body = run_bd(ctx, improved=cfg.method == "ibd")
    result = {"schema": RESULT_SCHEMA, "config": cfg.to_dict(), "dataset": split.summary(), **body,
              "provenance": provenance(device)}
    result["timing"]["total_s"] = time.perf_counter() - t0
    if out is not None:
        write_json(out, result)
    return result


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


def write_json(path: "str | Path", obj: Any) -> None:
    """Write JSON to a temporary file beside `path`, then rename it into place (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, separators=(",", ":"), default=_json_default)   # compact: per-user logs are long
        os.chmod(tmp, 0o644)              # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_finished(result: dict | None, config: dict) -> bool:
    """Is `result` a finished run of exactly this config under the current protocol?"""
    return result is not None and result.get("schema") == RESULT_SCHEMA and result.get("config") == config


def load_result(path: "str | Path") -> dict | None:
    """A finished result file, or None when it is missing or unreadable (it will be redone)."""
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
