"""Learning rate (and weight decay) chosen on validation, per (dataset, base model, role) (SPEC §8).

Each candidate trains the role's model alone with its CF loss for the warm-up budget, seed 0, with no
early stopping, validating every `eval_every` epochs; the candidate with the best validation N@50
anywhere on its curve wins. The curves are kept: they are also the learning curves that size the
budgets. Candidates are written one by one (atomically), so an interrupted search resumes.

    python -m ibd_lite tune --dataset citeulike-t --model cdae --profile converged
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from .config import make_config
from .data import load_split
from .errors import ConfigError
from .methods import ROLES, Context, _fit, make_learner, new_model, seed_everything
from .provenance import REPO, provenance
from .sampling import UnobservedSampler

LR_GRID: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 2e-3)      # SPEC §3
WD_GRID: tuple[float, ...] = (1e-6, 1e-5, 1e-4)            # searched at the chosen lr (second stage)
TUNED_FILE = REPO / "results" / "tuned.json"


def tuning_path(dataset: str, model: str, profile: str, root: "str | Path | None" = None) -> Path:
    """Where the candidates' curves of one (dataset, model, profile) search are kept."""
    return Path(root or REPO / "results" / "tuning") / f"{dataset}-{model}-{profile}.json"


def _key(c: dict) -> tuple:
    return (c["role"], float(c["lr"]), float(c["weight_decay"]), int(c["epochs"]))


def train_candidate(ctx: Context, role: str, lr: float, weight_decay: float, epochs: int) -> dict:
    """Train one role alone at (lr, weight_decay) for `epochs` epochs; return its validation curve."""
    setattr(ctx.cfg, f"lr_{role}", lr)
    setattr(ctx.cfg, f"wd_{role}", weight_decay)
    model = new_model(ctx, role)
    learner = make_learner(ctx, role, model)
    seed_everything(ctx.cfg.seed * 1009 + 2 + (role == "student"))
    t0 = time.perf_counter()
    res = _fit(ctx, [learner], epochs, phase=f"tune {role} lr={lr:g} wd={weight_decay:g}")
    curve = [[e["epoch"], e["valid"][role]["H@50"], e["valid"][role]["N@50"]] for e in res.history if "valid" in e]
    return {"role": role, "lr": lr, "weight_decay": weight_decay, "epochs": epochs,
            "best_epoch": learner.best_epoch, "best_valid_N@50": learner.best_score,
            "curve": curve, "seconds": time.perf_counter() - t0}


def tune(dataset: str, model: str, profile: str = "converged", *, epochs: int | None = None,
         lrs: Sequence[float] = LR_GRID, wds: Sequence[float] = WD_GRID, roles: Sequence[str] = ROLES,
         seed: int = 0, device: str = "auto", data_dir: str | None = None, root: "str | Path | None" = None,
         progress: bool = True) -> dict:
    """Run the two-stage search (lr at the smallest weight decay, then weight decay at the best lr).

    Finished candidates found in the search file are not retrained. Returns the search record.
    """
    from .runner import load_result, write_json

    cfg = make_config(dataset=dataset, model=model, profile=profile, method="teacher", seed=seed,
                      device=device, data_dir=data_dir)
    epochs = int(epochs or cfg.pretrain_epochs)
    bad = [r for r in roles if r not in ROLES]
    if bad:
        raise ConfigError(f"unknown role(s) {bad}; valid roles are: {', '.join(ROLES)}")
    split = load_split(cfg.dataset, cfg.data_dir, cfg.min_user_interactions, seed=cfg.seed)
    dev = torch.device(cfg.device)
    ctx = Context(cfg, split, dev, UnobservedSampler(split, dev), progress=False, cache_dir=None)
    path = tuning_path(cfg.dataset, cfg.model, cfg.profile, root)
    record = load_result(path) or {}
    record.update(dataset=cfg.dataset, model=cfg.model, profile=cfg.profile, seed=seed,
                  dims={"teacher": cfg.teacher_dim, "student": cfg.student_dim}, eval_every=cfg.eval_every)
    cands = {_key(c): c for c in record.get("candidates", [])}
    wd0 = min(wds)

    def ensure(role: str, lr: float, wd: float) -> dict:
        k = (role, float(lr), float(wd), epochs)
        if k not in cands:
            c = train_candidate(ctx, role, float(lr), float(wd), epochs)
            c["provenance"] = provenance(dev, cfg.model)
            cands[k] = c
            record["candidates"] = list(cands.values())
            write_json(path, record)
        bar.update(1)
        return cands[k]

    bar = tqdm(total=len(roles) * (len(lrs) + len(wds) - 1), desc=f"tune {cfg.dataset} {cfg.model}",
               disable=not progress)
    for role in roles:
        best = max((ensure(role, lr, wd0) for lr in lrs), key=lambda c: c["best_valid_N@50"])
        for wd in wds:
            if wd != wd0:
                ensure(role, best["lr"], wd)
    bar.close()
    record["candidates"] = list(cands.values())
    record["chosen"] = choose(record["candidates"], epochs)
    write_json(path, record)
    return record


def choose(candidates: Sequence[dict], epochs: int) -> dict[str, dict]:
    """Per role, the (lr, weight_decay) with the best validation N@50 at this budget."""
    out = {}
    for role in ROLES:
        cs = [c for c in candidates if c["role"] == role and c["epochs"] == epochs]
        if cs:
            b = max(cs, key=lambda c: c["best_valid_N@50"])
            out[role] = {"lr": b["lr"], "weight_decay": b["weight_decay"], "valid_N@50": b["best_valid_N@50"],
                         "best_epoch": b["best_epoch"], "epochs": epochs}
    return out


def load_tuned(path: "str | Path" = TUNED_FILE) -> dict:
    """The committed choices: {"profile/dataset/model": {"teacher": {...}, "student": {...}}}."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    except ValueError as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); restore it from git or re-run `python -m ibd_lite "
                          "tune`") from e


def save_tuned(record: dict, path: "str | Path" = TUNED_FILE) -> dict[str, Any]:
    """Store a search's choice under its (profile, dataset, model) key in the committed file."""
    from .runner import write_json

    tuned = load_tuned(path)
    key = f"{record['profile']}/{record['dataset']}/{record['model']}"
    tuned[key] = dict(record["chosen"], source=str(tuning_path(record["dataset"], record["model"],
                                                                 record["profile"]).relative_to(REPO)))
    write_json(path, dict(sorted(tuned.items())))
    return tuned[key]
