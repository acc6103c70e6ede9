"""One experiment configuration, the three profiles (ci, quick, paper) and validation of every value."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from .errors import ConfigError, choice_error

METHODS: tuple[str, ...] = ("teacher", "student", "rd", "cd", "bd", "ibd")
PROFILES: tuple[str, ...] = ("ci", "quick", "converged", "paper")
IBD_VARIANTS: tuple[str, ...] = ("full", "no-carry")
CD_GUIDES: tuple[str, ...] = ("student", "teacher")
AFTER_ROUNDS: tuple[str, ...] = ("bd", "rounds")

# Values each profile sets; anything the user passes explicitly wins.
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    # synthetic data, seconds on a CPU: for tests and the CI run of every chapter
    "ci": dict(dataset="synthetic", teacher_dim=32, student_dim=4, pretrain_epochs=12, epochs=12,
               refresh_every=2, rounds=4, eval_every=2, patience=100, lr=5e-3, rd_warmup=2),
    # real data, minutes on a 2-core CPU: BD's own code sizes (50 / 5)
    "quick": dict(teacher_dim=50, student_dim=5, pretrain_epochs=200, epochs=120, refresh_every=10,
                  rounds=10, eval_every=10, patience=5, lr=2e-3),
    # the book's tables on a CPU: BD's code sizes (50 / 5), budgets sized from measured learning curves
    "converged": dict(teacher_dim=50, student_dim=5, pretrain_epochs=600, epochs=1400, refresh_every=10,
                      rounds=10, eval_every=10, patience=5, lr=2e-3),
    # the paper's scale (teacher 200 / student 20), meant for a GPU
    "paper": dict(teacher_dim=200, student_dim=20, pretrain_epochs=300, epochs=400, refresh_every=10,
                  rounds=10, eval_every=10, patience=5, lr=1e-3),
}

# Budgets of one base model that replace its profile's, sized from validation curves measured on citeulike-t
# (seed 0, trained alone, no early stop). A NeuMF epoch makes one Adam step per 128 interactions (about 900 on
# citeulike-t, against CDAE's 41 user batches), so it learns in far fewer epochs: the teacher (d = 50, lr 1e-3)
# peaks at validation N@50 ≈ 0.066 by epoch 30-50 and then over-fits, the student (d = 5, lr 2e-3) levels off
# at ≈ 0.029-0.030 from epoch 50 on (+1-2% H@50 by epoch 190).
MODEL_BUDGETS: dict[tuple[str, str], dict[str, Any]] = {
    ("quick", "neumf"): dict(pretrain_epochs=20, epochs=30, eval_every=5, refresh_every=5, rounds=5),
    ("converged", "neumf"): dict(pretrain_epochs=50, epochs=150),
}


@dataclass
class Config:
    """Everything that defines a run. `None` means: the model's or the profile's default."""

    dataset: str = "citeulike-t"
    model: str = "cdae"
    method: str = "teacher"
    profile: str = "quick"
    device: str = "auto"                 # auto = CUDA when present, else CPU
    seed: int = 0
    data_dir: str | None = None
    min_user_interactions: int = 5
    # sizes and optimisation (SPEC §3)
    teacher_dim: int | None = None
    student_dim: int | None = None
    lr: float | None = None              # both roles; None: the tuned value (results/tuned.json), else the profile's
    weight_decay: float | None = None    # both roles; None: the tuned value, else 1e-6
    lr_teacher: float | None = None      # per role, when set (wins over lr)
    lr_student: float | None = None
    wd_teacher: float | None = None
    wd_student: float | None = None
    batch_size: int = 128                # users (CDAE) or interactions (NeuMF, BPR-MF) per step
    neg_per_pos: int | None = None       # CDAE 5, NeuMF 4, BPR-MF 1
    pretrain_epochs: int | None = None   # max epochs of training alone (teacher, student, warm-up)
    epochs: int | None = None            # max epochs of distillation
    eval_every: int | None = None        # validate every this many epochs
    patience: int | None = None          # evaluations without a better valid N@50 before stopping ...
    early_stop: bool = False             # ... only when this is on: never in a table (SPEC §8, equal budgets)
    ks: tuple[int, ...] = (50, 100)
    # BD (SPEC §5)
    gamma_ts: float = 0.5
    gamma_st: float = 0.5
    tau: float | None = None             # CDAE 2, others 5
    eps_t: float | None = None           # CDAE 1e-4, others 1e-2
    eps_e: float = 1e-4
    refresh_every: int | None = None     # P
    kd_per_pos: int = 5                  # |D_u| = kd_per_pos · |I_u+| per direction
    bd_direction: str = "paper"
    # iBD (SPEC §6)
    rounds: int | None = None            # M
    top_n: int = 100
    retire_after: int = 3                # A
    ibd_variant: str = "full"
    after_rounds: str = "bd"             # what follows round M: plain BD, or more rounds
    # RD and CD (SPEC §4)
    rd_k: int = 10
    rd_lambda: float = 1.0
    rd_mu: float = 0.1
    rd_alpha: float = 1.0
    rd_warmup: int = 10                  # epochs with position weights only
    cd_lambda: float = 1.0
    cd_mu: float = 10.0
    cd_tau: float = 2.0
    cd_guide: str = "student"
    extra: dict = field(default_factory=dict)   # free-form notes carried into the result

    def resolved(self) -> "Config":
        """A copy with profile and model defaults filled in, names canonical, values checked."""
        from .data import resolve_dataset
        from .models import BD_EPS_T, BD_TAU, NEG_PER_POS, resolve_model

        c = dataclasses.replace(self)
        check_types(c)
        c.profile = _choice("profile", c.profile, PROFILES)
        c.method = _choice("method", c.method, METHODS)
        c.dataset = resolve_dataset(c.dataset)
        c.model = resolve_model(c.model)
        prof = {**PROFILE_DEFAULTS[c.profile], **MODEL_BUDGETS.get((c.profile, c.model), {})}
        for name, value in prof.items():
            if name in ("dataset", "lr"):
                continue
            if getattr(c, name) is None:
                setattr(c, name, value)
        c.neg_per_pos = NEG_PER_POS[c.model] if c.neg_per_pos is None else c.neg_per_pos
        c.tau = BD_TAU[c.model] if c.tau is None else c.tau
        c.eps_t = BD_EPS_T[c.model] if c.eps_t is None else c.eps_t
        c.device = resolve_device(c.device)
        _resolve_role_optim(c, prof)
        c.ks = tuple(int(k) for k in c.ks)
        c.bd_direction = _choice("bd_direction", c.bd_direction, ("paper", "released"))
        c.ibd_variant = _choice("ibd_variant", c.ibd_variant, IBD_VARIANTS)
        c.cd_guide = _choice("cd_guide", c.cd_guide, CD_GUIDES)
        c.after_rounds = _choice("after_rounds", c.after_rounds, AFTER_ROUNDS)
        c.validate()
        return c

    def validate(self) -> None:
        """Range checks that name the parameter and the allowed range (every number finite)."""
        positive_ints = ["teacher_dim", "student_dim", "batch_size", "neg_per_pos", "pretrain_epochs",
                         "epochs", "eval_every", "patience", "refresh_every", "kd_per_pos", "rounds",
                         "top_n", "retire_after", "rd_k"]
        for name in positive_ints:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name}={v!r} is out of range: it must be an integer >= 1")
        if not 0 <= self.seed < SEED_LIMIT:
            raise ConfigError(f"seed={self.seed!r} is out of range: it must be an integer in [0, 2**32 - 1] "
                              f"(0 to {SEED_LIMIT - 1})")
        if self.min_user_interactions < 3:
            raise ConfigError(f"min_user_interactions={self.min_user_interactions} is out of range: it must be >= 3 "
                              "(each user needs a test, a validation and at least one training item)")
        for name, v in _float_values(self):
            if not math.isfinite(v):
                raise ConfigError(f"{name}={v!r} is not finite: it must be a finite number "
                                  f"{_RANGE_TEXT[name in _POSITIVE_FLOATS]}")
        for name in _POSITIVE_FLOATS:
            if getattr(self, name) is None:
                continue
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)!r} is out of range: it must be > 0")
        for name in ["weight_decay", "wd_teacher", "wd_student", "gamma_ts", "gamma_st", "eps_t", "eps_e", "rd_mu",
                     "rd_alpha", "cd_lambda"]:
            if getattr(self, name) is not None and not getattr(self, name) >= 0:
                raise ConfigError(f"{name}={getattr(self, name)!r} is out of range: it must be >= 0")
        if not self.ks or any(k < 1 for k in self.ks):
            raise ConfigError(f"ks={self.ks!r} is out of range: each K must be an integer >= 1")
        if 50 not in self.ks:
            raise ConfigError(f"ks={list(self.ks)} must include 50: model selection and early stopping use "
                              "validation N@50 (e.g. --ks 10 50 100)")
        if self.method == "ibd" and self.epochs < (self.rounds + 1) * self.refresh_every:
            raise ConfigError(f"epochs={self.epochs} is too short for iBD with rounds={self.rounds} and "
                              f"refresh_every={self.refresh_every}: round 0 and rounds 1..M need at least "
                              f"(rounds + 1) * refresh_every = {(self.rounds + 1) * self.refresh_every} epochs; "
                              "raise --epochs or lower --rounds")
        if self.student_dim > self.teacher_dim:
            raise ConfigError(f"student_dim={self.student_dim} is larger than teacher_dim={self.teacher_dim}: "
                              "the student must be the smaller model")

    def role_lr(self, role: str) -> float:
        """The learning rate of the teacher or the student (resolved configs only)."""
        return self.lr_teacher if role == "teacher" else self.lr_student

    def role_wd(self, role: str) -> float:
        """The weight decay of the teacher or the student (resolved configs only)."""
        return self.wd_teacher if role == "teacher" else self.wd_student

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        d = dataclasses.asdict(self)
        d["ks"] = list(self.ks)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """Inverse of `to_dict`; unknown keys are an error naming them."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; valid keys are: {', '.join(sorted(names))}")
        d = dict(d)
        if isinstance(d.get("ks"), list):
            d["ks"] = tuple(d["ks"])
        return cls(**d)


def make_config(**kwargs: Any) -> Config:
    """Config from keyword arguments, with the profile's dataset when none is given, resolved and checked."""
    profile = kwargs.get("profile", "quick")
    if "dataset" not in kwargs or kwargs["dataset"] is None:
        prof = PROFILE_DEFAULTS.get(profile, {}) if isinstance(profile, str) else {}
        kwargs["dataset"] = prof.get("dataset", Config.dataset)
    return Config.from_dict(kwargs).resolved()


def _resolve_role_optim(c: Config, prof: dict[str, Any]) -> None:
    """Fill each role's lr and weight decay: explicit per-role value, else explicit lr / weight_decay,
    else the value chosen on validation for (profile, dataset, model) in results/tuned.json, else the
    profile's lr and 1e-6."""
    from .tuning import load_tuned

    tuned = load_tuned().get(f"{c.profile}/{c.dataset}/{c.model}", {})
    for role in ("teacher", "student"):
        t = tuned.get(role, {})
        if getattr(c, f"lr_{role}") is None:
            setattr(c, f"lr_{role}", c.lr if c.lr is not None else t.get("lr", prof["lr"]))
        if getattr(c, f"wd_{role}") is None:
            setattr(c, f"wd_{role}", c.weight_decay if c.weight_decay is not None else t.get("weight_decay", 1e-6))


def resolve_device(device: "str | torch.device") -> str:
    """'auto' -> 'cuda' when available else 'cpu'; a device this machine lacks is a clear error."""
    dev = str(device).lower()
    if dev == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cuda" or re.fullmatch(r"cuda:\d+", dev):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device!r} was requested but CUDA is not available on this machine "
                              "(torch.cuda.is_available() is False); use --device cpu or --device auto")
        n = torch.cuda.device_count()
        if dev != "cuda" and int(dev.split(":")[1]) >= n:
            raise ConfigError(f"device={device!r} does not exist: this machine has {n} CUDA device(s), "
                              f"cuda:0 to cuda:{n - 1}; use --device cuda:0 or --device auto")
        return dev
    if dev == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device={device!r} was requested but Apple's MPS backend is not available on this "
                              "machine (torch.backends.mps.is_available() is False); use --device cpu or "
                              "--device auto")
        return dev
    if dev == "cpu":
        return dev
    raise ConfigError(f"unknown device {device!r}; valid devices are: auto, cpu, cuda, cuda:N, mps")


# ------------------------------------------------------------------------------- type checks (Python API)

SEED_LIMIT = 2 ** 32
_POSITIVE_FLOATS = ("lr", "lr_teacher", "lr_student", "tau", "cd_tau", "cd_mu", "rd_lambda")
_RANGE_TEXT = {True: "> 0", False: ">= 0"}


def _float_values(cfg: Config) -> list[tuple[str, float]]:
    """(name, value) of every set float field."""
    hints = typing.get_type_hints(Config)
    return [(f.name, getattr(cfg, f.name)) for f in fields(Config)
            if _base_type(hints[f.name]) is float and getattr(cfg, f.name) is not None]


def _base_type(hint: Any) -> Any:
    """`int | None` -> int; other hints unchanged."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1 else hint


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def check_types(cfg: Config) -> None:
    """Every field has its declared type (ints are real ints, numbers are not strings), with the fix named;
    numpy scalars become Python ones, paths and devices become strings, ks a tuple of ints."""
    hints = typing.get_type_hints(Config)
    for f in fields(Config):
        v, hint = getattr(cfg, f.name), hints[f.name]
        if v is None and _base_type(hint) is not hint:
            continue
        setattr(cfg, f.name, _checked(f.name, v, _base_type(hint)))


def _checked(name: str, v: Any, typ: Any) -> Any:
    """The value converted to `typ`, or a ConfigError naming the expected type."""
    got = type(v).__name__
    if typ is int:
        if _is_int(v):
            return int(v)
        hint = f" (e.g. {name}={int(v)})" if isinstance(v, float) and math.isfinite(v) else ""
        raise ConfigError(f"{name}={v!r} has type {got}: it must be an integer{hint}")
    if typ is bool:
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        raise ConfigError(f"{name}={v!r} has type {got}: it must be True or False")
    if typ is float:
        if _is_int(v) or isinstance(v, (float, np.floating)):
            return float(v)
        raise ConfigError(f"{name}={v!r} has type {got}: it must be a number (int or float, not a string)")
    if typ is str:
        if name == "device" and isinstance(v, torch.device) or name == "data_dir" and isinstance(v, os.PathLike):
            return str(v)
        if isinstance(v, str):
            return v
        raise ConfigError(f"{name}={v!r} has type {got}: it must be a string")
    if typing.get_origin(typ) is tuple:             # ks
        if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or not all(_is_int(k) for k in v):
            example = f"{name}=({int(v)},)" if _is_int(v) else f"{name}=(50, 100)"
            raise ConfigError(f"{name}={v!r} must be a sequence of integers, e.g. {example}")
        return tuple(int(k) for k in v)
    if typ is dict:
        try:
            json.dumps(v, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{name} must be a dict of JSON values (it is stored in the result): {e}") from e
        if not isinstance(v, dict):
            raise ConfigError(f"{name}={v!r} has type {got}: it must be a dict")
    return v


def _choice(kind: str, value: str, valid: tuple[str, ...]) -> str:
    v = str(value).lower()
    if v not in valid:
        raise choice_error(kind, value, valid)
    return v
