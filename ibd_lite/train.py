"""Training engine shared by every method: epochs of CF steps, optional distillation pairs per step,
validation with early stopping on N@50, and the best checkpoint kept per model."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .errors import DivergedError
from .metrics import evaluate
from .models import Recommender, eval_mode
from .sampling import UnobservedSampler
from .sparse import csr_gather, csr_positions, indptr_to_rows

SELECT_METRIC = "N@50"


@dataclass
class KDPairs:
    """One epoch's distillation pairs for a receiving model, grouped by user (CSR).

    Targets are fixed (`target`, e.g. RD's 1s or CD's soft labels) or, when `giver` is set, computed at
    each step as σ(s_giver / τ) with the giver in eval mode and no gradient (BD's stop-gradient).
    """

    indptr: torch.Tensor                      # [n_users + 1]
    items: torch.Tensor                       # [m]
    coef: float                               # γ, α or λ
    target: torch.Tensor | None = None        # [m] in [0, 1]
    weight: torch.Tensor | None = None        # [m] per-pair weight (RD's w_r), default 1
    giver: Recommender | None = None
    tau: float = 1.0

    def __post_init__(self) -> None:
        self.users = indptr_to_rows(self.indptr)                 # [m] user of each pair

    @property
    def size(self) -> int:
        return int(self.items.numel())


@dataclass
class Learner:
    """A model being trained, its optimiser, early-stopping state and this epoch's KD pairs."""

    name: str
    model: Recommender
    lr: float
    weight_decay: float
    patience: int
    kd: KDPairs | None = None
    best_score: float = float("-inf")
    best_epoch: int = 0
    best_state: dict | None = None
    bad_evals: int = 0
    opt: torch.optim.Optimizer = field(init=False)

    def __post_init__(self) -> None:
        # fused Adam: one kernel per step over all parameters (much faster than the per-tensor loop)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay, fused=True)

    @property
    def stopped(self) -> bool:
        return self.bad_evals >= self.patience

    def observe(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Record a validation result; keep the weights when N@50 improves. Returns True on improvement."""
        score = metrics[SELECT_METRIC] if SELECT_METRIC in metrics else next(iter(metrics.values()))
        if score > self.best_score:
            self.best_score, self.best_epoch, self.bad_evals = score, epoch, 0
            self.snapshot()
            return True
        self.bad_evals += 1
        return False

    def snapshot(self) -> None:
        """Keep a CPU copy of the current weights as the best ones."""
        self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def restore_best(self) -> None:
        """Load the best validated weights back into the model."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)


def _epoch_batches(split, unit: str, batch_size: int, device) -> list[torch.Tensor]:
    """User batches (CDAE) or batches of training-interaction indices (pair models), shuffled."""
    n = split.n_users if unit == "user" else split.n_train
    perm = torch.randperm(n, device=device)
    return list(torch.split(perm, batch_size))


def _kd_chunks(kd: KDPairs | None, n_steps: int) -> list[torch.Tensor] | None:
    if kd is None or kd.size == 0:
        return None
    return list(torch.tensor_split(torch.randperm(kd.size, device=kd.items.device), n_steps))


def _kd_step_pairs(kd: KDPairs | None, unit: str, batch: torch.Tensor, chunks, step: int):
    """Indices into the KD arrays used at this step (the batch's users, or the step's chunk)."""
    if kd is None or kd.size == 0:
        return None
    if unit == "user":
        return csr_positions(kd.indptr, batch)[1]
    return chunks[step]


@torch.no_grad()
def _giver_targets(kd: KDPairs, idx: torch.Tensor) -> torch.Tensor:
    with eval_mode(kd.giver):
        logits = kd.giver.pair_logits(kd.users[idx], kd.items[idx])
    return torch.sigmoid(logits / kd.tau)


def train_epoch(learners: list[Learner], split, sampler: UnobservedSampler, neg_per_pos: int,
                batch_size: int, progress: bool = False) -> dict[str, dict[str, float]]:
    """One epoch for every learner on the same shuffled batches; returns summed CF and KD losses per learner."""
    unit = learners[0].model.batch_unit
    device = sampler.device
    batches = _epoch_batches(split, unit, batch_size, device)
    chunks = [_kd_chunks(l.kd, len(batches)) for l in learners]
    totals = {l.name: {"cf": 0.0, "kd": 0.0} for l in learners}
    for l in learners:
        l.model.train()
    for step, batch in enumerate(tqdm(batches, desc="epoch", leave=False, disable=not progress)):
        if unit == "user":
            local, items_pos, _ = csr_gather(sampler.indptr, sampler.indices, batch)
            users_pos, norm = batch[local], len(batch)
        else:
            users_pos, items_pos, norm = sampler.train_users[batch], sampler.train_items[batch], len(batch)
        neg = sampler.sample(users_pos, neg_per_pos)                            # [n, k]
        kd_sel = [_kd_step_pairs(l.kd, unit, batch, c, step) for l, c in zip(learners, chunks)]
        # All giver targets are computed before any model moves: both sides of BD update together.
        kd_tgt = [None if idx is None else (_giver_targets(l.kd, idx) if l.kd.giver is not None else l.kd.target[idx])
                  for l, idx in zip(learners, kd_sel)]
        for l, idx, tgt in zip(learners, kd_sel, kd_tgt):
            cf, kd_loss = _losses(l, users_pos, items_pos, neg, idx, tgt)
            loss = (cf + (l.kd.coef * kd_loss if idx is not None else 0.0)) / norm
            l.opt.zero_grad(set_to_none=True)
            loss.backward()
            l.opt.step()
            totals[l.name]["cf"] += float(cf.detach())
            totals[l.name]["kd"] += float(kd_loss.detach())
    return totals


def _losses(l: Learner, users_pos, items_pos, neg, idx, tgt):
    """CF loss and KD loss (both summed) from one forward pass over all of the step's pairs."""
    n, k = neg.shape
    users = [users_pos, users_pos.repeat_interleave(k)]
    items = [items_pos, neg.reshape(-1)]
    if idx is not None:
        users.append(l.kd.users[idx])
        items.append(l.kd.items[idx])
    logits = l.model.pair_logits(torch.cat(users), torch.cat(items))
    pos, negl = logits[:n], logits[n:n + n * k].view(n, k)
    cf = l.model.cf_loss(pos, negl)
    if idx is None:
        return cf, torch.zeros((), device=logits.device)
    kd_logits = logits[n + n * k:]
    bce = F.binary_cross_entropy_with_logits(kd_logits, tgt, reduction="none")
    if l.kd.weight is not None:
        bce = bce * l.kd.weight[idx]
    return cf, bce.sum()


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    seconds_train: float = 0.0
    seconds_eval: float = 0.0
    epochs_run: int = 0


def fit(learners: list[Learner], split, sampler: UnobservedSampler, *, epochs: int, neg_per_pos: int,
        batch_size: int, eval_every: int, ks=(50, 100), phase: str = "train",
        on_epoch_start: Callable[[int], dict | None] | None = None, track_test: bool = False,
        progress: bool = True, epoch_offset: int = 0, early_stop: bool = False) -> FitResult:
    """Train learners together for `epochs` epochs, validating every `eval_every` epochs.

    Every learner trains the whole budget (equal budgets, SPEC §8) unless `early_stop` is on, in which
    case training stops once every learner has run out of patience. Each keeps its best validated
    weights (restored at the end). `on_epoch_start(epoch)` may set each learner's KD pairs and return a
    dict that is logged into that epoch's history entry.
    """
    res = FitResult()
    bar = tqdm(range(1, epochs + 1), desc=phase, disable=not progress)
    for epoch in bar:
        t0 = time.perf_counter()
        extra = on_epoch_start(epoch) if on_epoch_start else None
        losses = train_epoch(learners, split, sampler, neg_per_pos, batch_size)
        check_finite_losses(learners, losses, phase, epoch + epoch_offset)
        entry = {"phase": phase, "epoch": epoch + epoch_offset, "loss": losses}
        if extra:
            entry.update(extra)
        _sync(sampler.device)
        res.seconds_train += time.perf_counter() - t0
        entry["seconds"] = time.perf_counter() - t0
        if epoch % eval_every == 0 or epoch == epochs:
            t1 = time.perf_counter()
            entry["valid"] = {}
            for l in learners:
                l.model.eval()
                m = evaluate(l.model, split, "valid", ks)
                entry["valid"][l.name] = m
                l.observe(epoch + epoch_offset, m)
                if track_test:
                    entry.setdefault("test", {})[l.name] = evaluate(l.model, split, "test", ks)
            res.seconds_eval += time.perf_counter() - t1
            bar.set_postfix({l.name: round(entry["valid"][l.name][SELECT_METRIC], 4) for l in learners})
        res.history.append(entry)
        res.epochs_run = epoch
        if early_stop and all(l.stopped for l in learners):
            break
    for l in learners:
        l.restore_best()
        l.model.eval()
    return res


def check_finite_losses(learners: list[Learner], losses: dict[str, dict[str, float]], phase: str,
                        epoch: int) -> None:
    """Stop with DivergedError when an epoch's CF or KD loss is NaN or infinite (never report a diverged model)."""
    for l in learners:
        bad = {kind: v for kind, v in losses[l.name].items() if not math.isfinite(v)}
        if not bad:
            continue
        kind, value = next(iter(bad.items()))
        suspects = f"lr={l.lr:g}, weight_decay={l.weight_decay:g}"
        if l.kd is not None:
            suspects += (f", the distillation weight (gamma_ts/gamma_st, rd_alpha or cd_lambda)={l.kd.coef:g}"
                         + (f", tau={l.kd.tau:g}" if l.kd.giver is not None else ""))
        raise DivergedError(f"training diverged: the {kind.upper()} loss of model {l.name!r} is {value} in phase "
                            f"{phase!r} at epoch {epoch}. Suspect parameters: {suspects}; lower the learning rate "
                            "or the distillation weight/temperature and run again")


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def clone_model(model: Recommender) -> Recommender:
    """An independent copy (weights included) of a model."""
    return copy.deepcopy(model)
