"""The methods: a model trained alone (teacher / student), RD, CD (SPEC §4), BD (§5) and iBD (§6).

Each `run_*` takes a resolved Config and a Context (split, device, pre-trained models) and returns
the method-specific part of the result dict.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from .bd import DIRS, RoundSet, build_round_set, feedback, refresh
from .codec import encode
from .config import Config
from .metrics import evaluate
from .models import Recommender, build_model, eval_mode
from .provenance import code_fingerprint
from .sampling import UnobservedSampler, cd_probabilities, rd_weights
from .sparse import counts_to_indptr, csr_gather, indptr_to_rows
from .train import FitResult, KDPairs, Learner, fit

ROLES = ("teacher", "student")
# Config fields that change a pre-trained model; the cache key is built from these alone.
PRETRAIN_KEYS = ("dataset", "model", "seed", "min_user_interactions", "batch_size", "neg_per_pos",
                 "pretrain_epochs", "eval_every", "patience", "early_stop", "data_dir")
CHECKPOINT_FORMAT = 2   # {"format", "state": tensors, "report": JSON text}: loads with weights_only=True


@dataclass
class Context:
    cfg: Config
    split: object
    device: torch.device
    sampler: UnobservedSampler
    progress: bool = True
    cache_dir: Path | None = None


def seed_everything(seed: int) -> None:
    """Seed torch's CPU and CUDA generators (numpy is not used for randomness)."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def role_dim(cfg: Config, role: str) -> int:
    return cfg.teacher_dim if role == "teacher" else cfg.student_dim


def new_model(ctx: Context, role: str) -> Recommender:
    """A freshly initialised model of the role's size, seeded so that its weights do not depend on run order."""
    seed_everything(ctx.cfg.seed * 1009 + (0 if role == "teacher" else 1))
    return build_model(ctx.cfg.model, ctx.split, role_dim(ctx.cfg, role)).to(ctx.device)


def make_learner(ctx: Context, name: str, model: Recommender) -> Learner:
    c = ctx.cfg
    return Learner(name, model, c.role_lr(name), c.role_wd(name), c.patience)


def _fit(ctx: Context, learners: list[Learner], epochs: int, phase: str, **kw) -> FitResult:
    c = ctx.cfg
    return fit(learners, ctx.split, ctx.sampler, epochs=epochs, neg_per_pos=c.neg_per_pos,
               batch_size=c.batch_size, eval_every=c.eval_every, ks=c.ks, phase=phase,
               progress=ctx.progress, early_stop=c.early_stop, **kw)


def model_report(ctx: Context, learner: Learner, seconds_predict: dict | None = None) -> dict:
    """Test and validation metrics of a learner's best weights, size, best epoch, and every user's
    0-based test and validation rank (so that paired statistics need no retraining)."""
    t0 = time.perf_counter()
    test, test_ranks = evaluate(learner.model, ctx.split, "test", ctx.cfg.ks, return_ranks=True)
    if seconds_predict is not None:
        seconds_predict[learner.name] = time.perf_counter() - t0
    valid, valid_ranks = evaluate(learner.model, ctx.split, "valid", ctx.cfg.ks, return_ranks=True)
    return {"test": test, "valid": valid, "valid_best": {"N@50": learner.best_score},
            "best_epoch": learner.best_epoch, "n_params": learner.model.n_params(), "dim": learner.model.dim,
            "ranks": {"test": encode(test_ranks), "valid": encode(valid_ranks)}}


# ---------------------------------------------------------------- training alone, with a checkpoint cache

def pretrain_key(cfg: Config, role: str, device: torch.device) -> str:
    """Cache key of a warm-up: the config fields that shape it, the role, and the training code's fingerprint."""
    d = {k: getattr(cfg, k) for k in PRETRAIN_KEYS}
    d.update(role=role, dim=role_dim(cfg, role), lr=cfg.role_lr(role), weight_decay=cfg.role_wd(role),
             device=device.type, code=code_fingerprint(cfg.model), v=3)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pretrain(ctx: Context, role: str) -> tuple[Recommender, dict]:
    """Train the role's model alone with its CF loss (or load it from the cache) -> model, report.

    A cache entry is trained once: its lock `<entry>.lock` makes a second process wait and then load it.
    """
    if ctx.cache_dir is None:
        return _train_alone(ctx, role)
    path = ctx.cache_dir / f"{ctx.cfg.dataset}-{ctx.cfg.model}-{role}-{pretrain_key(ctx.cfg, role, ctx.device)}.pt"
    lock = FileLock(f"{path}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as e:
        warnings.warn(f"cannot use the warm-up cache folder {path.parent} ({e.strerror or e}); training the "
                      f"{role}'s warm-up without the cache", stacklevel=2)
        return _train_alone(ctx, role)
    try:
        loaded = _load_checkpoint(ctx, role, path)
        if loaded is not None:
            return loaded
        model, report = _train_alone(ctx, role)
        _save_checkpoint(path, model, report)
        return model, report
    finally:
        lock.release()


def _train_alone(ctx: Context, role: str) -> tuple[Recommender, dict]:
    model = new_model(ctx, role)
    learner = make_learner(ctx, role, model)
    res = _fit(ctx, [learner], ctx.cfg.pretrain_epochs, phase=f"pretrain {role}")
    report = {"history": res.history, "seconds_train": res.seconds_train, "seconds_eval": res.seconds_eval,
              "epochs_run": res.epochs_run, "best_epoch": learner.best_epoch,
              "valid_best": {"N@50": learner.best_score}, "n_params": model.n_params(), "dim": model.dim}
    return model, dict(report, cached=False)


def _load_checkpoint(ctx: Context, role: str, path: Path) -> tuple[Recommender, dict] | None:
    """A cached warm-up loaded as plain tensors and JSON (never code), or None; a file that does not load
    safely and completely is discarded with a warning naming it (it is retrained)."""
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location=ctx.device, weights_only=True)
        if not (isinstance(blob, dict) and blob.get("format") == CHECKPOINT_FORMAT):
            raise ValueError(f"not a format-{CHECKPOINT_FORMAT} warm-up checkpoint")
        report = json.loads(blob["report"])
        model = build_model(ctx.cfg.model, ctx.split, role_dim(ctx.cfg, role)).to(ctx.device)
        model.load_state_dict(blob["state"])
        model.eval()
        return model, dict(report, cached=True)
    except Exception as e:  # noqa: BLE001 - any failure means: do not trust the file
        why = ("torch.load(weights_only=True) refused it" if isinstance(e, pickle.UnpicklingError)
               else (str(e).strip().splitlines() or [""])[0][:200])
        warnings.warn(f"discarding warm-up cache file {path}: it does not load safely as plain tensors "
                      f"({type(e).__name__}: {why}); it is retrained", stacklevel=2)
        path.unlink(missing_ok=True)
        return None


def _save_checkpoint(path: Path, model: Recommender, report: dict) -> None:
    """Store tensors plus the report as a JSON string (loadable with weights_only=True), atomically; a
    failed write (disk full) only costs the cache entry, with a warning."""
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    blob = {"format": CHECKPOINT_FORMAT, "state": model.state_dict(),
            "report": json.dumps({k: v for k, v in report.items() if k != "cached"})}
    try:
        torch.save(blob, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:     # torch's zip writer reports a full disk as RuntimeError
        tmp.unlink(missing_ok=True)
        warnings.warn(f"could not store the warm-up in the cache ({path}: {e.strerror or e}); continuing "
                      "without caching it", stacklevel=2)


def warm_learner(ctx: Context, role: str) -> tuple[Learner, dict]:
    """A learner starting from the role's warm-up checkpoint, which also counts as its best so far.

    Every method continues from the same warm-up and gets the same `epochs` afterwards, so a model
    trained alone, RD, CD, BD and iBD all have the same training budget and the same selection rule.
    """
    model, rep = pretrain(ctx, role)
    learner = make_learner(ctx, role, model)
    learner.best_score, learner.best_epoch = rep["valid_best"]["N@50"], rep["best_epoch"]
    learner.snapshot()
    return learner, rep


def run_alone(ctx: Context, role: str) -> dict:
    """Method `teacher` or `student`: the warm-up model trained on alone for `epochs` more epochs."""
    learner, rep = warm_learner(ctx, role)
    seed_everything(ctx.cfg.seed * 1009 + 4)   # the same draws whether the warm-up was trained or loaded
    res = _fit(ctx, [learner], ctx.cfg.epochs, phase=role, epoch_offset=rep["epochs_run"])
    pred = {}
    return {"models": {role: model_report(ctx, learner, pred)}, "history": rep["history"] + res.history,
            "pretrain": {role: _strip_history(rep)},
            "timing": {"pretrain_s": rep["seconds_train"] + rep["seconds_eval"],
                       "distill_s": res.seconds_train + res.seconds_eval, "predict_s": pred[role]}}


def _strip_history(rep: dict) -> dict:
    return {k: v for k, v in rep.items() if k != "history"}


def _frozen_teacher(ctx: Context) -> tuple[Recommender, dict, dict]:
    tl, rep = warm_learner(ctx, "teacher")
    for p in tl.model.parameters():
        p.requires_grad_(False)
    return tl.model, rep, model_report(ctx, tl)


# ---------------------------------------------------------------- RD and CD (teacher frozen, student from its warm-up)

# Users per scoring batch: on a CPU a batch of scores [64, n_items] stays in cache while it is masked, ranked and
# searched (3-4x faster than 512 on citeulike-t); a GPU wants large batches.
_SCORE_BATCH = {"cpu": 64, "cuda": 1024}


def unobserved_scores(ctx: Context, model: Recommender, batch_users: int | None = None):
    """Yield (first user, scores [b, n_items]) per user batch, in eval mode, training items at -inf.

    The model's train/eval mode is restored when the iteration ends.
    """
    b = batch_users or _SCORE_BATCH.get(ctx.device.type, 512)
    indptr, indices = ctx.split.train_indptr.to(ctx.device), ctx.split.train_indices.to(ctx.device)
    with eval_mode(model):
        for lo in range(0, ctx.split.n_users, b):
            users = torch.arange(lo, min(lo + b, ctx.split.n_users), device=ctx.device)
            with torch.no_grad():
                s = model.score_all(users)
            rows, cols, _ = csr_gather(indptr, indices, users)          # the batch's training items
            yield lo, s.index_put_((rows, cols), s.new_tensor(float("-inf")))


def top_items(ctx: Context, model: Recommender, k: int, batch_users: int | None = None) -> torch.Tensor:
    """A model's top-k unobserved items per user -> [n_users, k] (rank order)."""
    return torch.cat([torch.topk(s, k, dim=1).indices for _, s in unobserved_scores(ctx, model, batch_users)])


def ranks_of_items(ctx: Context, model: Recommender, items: torch.Tensor, batch_users: int | None = None) -> torch.Tensor:
    """A model's 1-based rank of given items [n_users, k] among each user's unobserved items.

    rank = 1 + #{unobserved j: s_j > s_item}: counted column by column for a few items (k ≤ 32; numpy's SIMD
    comparisons on the CPU), else read off each user's sorted scores with a binary search.
    """
    out = []
    for lo, s in unobserved_scores(ctx, model, batch_users):
        v = s.gather(1, items[lo:lo + len(s)])                                      # [b, k]
        out.append(count_above(s, v) + 1 if v.shape[1] <= 32 else
                   s.shape[1] - torch.searchsorted(sort_rows(s), v.contiguous(), right=True) + 1)
    return torch.cat(out)


def count_above(s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """#{j: s[u, j] > v[u, c]} -> int64 [b, k], for scores s [b, n] and values v [b, k]."""
    if s.is_cuda:
        return torch.stack([(s > v[:, c:c + 1]).sum(1) for c in range(v.shape[1])], 1)
    a, w = s.numpy(), v.numpy()
    return torch.from_numpy(np.stack([np.count_nonzero(a > w[:, c, None], axis=1) for c in range(w.shape[1])], 1)
                            .astype(np.int64, copy=False))


def sort_rows(x: torch.Tensor) -> torch.Tensor:
    """Each row sorted ascending (numpy's SIMD sort on the CPU, torch.sort on a GPU)."""
    if x.is_cuda:
        return torch.sort(x, dim=1).values
    return torch.from_numpy(np.sort(x.numpy(), axis=1))


def run_rd(ctx: Context) -> dict:
    """Ranking distillation: the teacher's top-K items as weighted extra positives of the student."""
    c = ctx.cfg
    teacher, t_rep, t_report = _frozen_teacher(ctx)
    top = top_items(ctx, teacher, c.rd_k)                                        # [n_users, K]
    sl, s_rep = warm_learner(ctx, "student")
    student = sl.model
    indptr = torch.arange(0, (ctx.split.n_users + 1) * c.rd_k, c.rd_k, device=ctx.device)
    ones = torch.ones(top.numel(), device=ctx.device)

    def on_epoch(epoch: int) -> dict:
        use_b = epoch > c.rd_warmup
        w = rd_weights(ranks_of_items(ctx, student, top), c.rd_lambda, c.rd_mu, use_discrepancy=use_b) \
            if use_b else rd_weights(top.new_ones(top.shape), c.rd_lambda, c.rd_mu, use_discrepancy=False)
        sl.kd = KDPairs(indptr, top.reshape(-1), coef=c.rd_alpha, target=ones, weight=w.reshape(-1))
        return {"rd_discrepancy": use_b}

    seed_everything(c.seed * 1009 + 5)
    res = _fit(ctx, [sl], c.epochs, phase="rd student", on_epoch_start=on_epoch, epoch_offset=s_rep["epochs_run"])
    return _ud_result(ctx, sl, t_rep, s_rep, t_report, res)


def run_cd(ctx: Context) -> dict:
    """Collaborative distillation: the teacher's soft labels on items drawn by rank-aware sampling."""
    c = ctx.cfg
    teacher, t_rep, t_report = _frozen_teacher(ctx)
    sl, s_rep = warm_learner(ctx, "student")
    student = sl.model
    n_u = c.kd_per_pos * ctx.split.train_counts.to(ctx.device)
    depth = min(ctx.split.n_items - int(ctx.split.train_counts.max()), max(1, math.ceil(30 * c.cd_mu)))
    probs = cd_probabilities(torch.arange(1, depth + 1, device=ctx.device)[None, :], c.cd_mu)[0]   # [depth]
    fixed_top = top_items(ctx, teacher, depth) if c.cd_guide == "teacher" else None

    def on_epoch(epoch: int) -> dict:
        guide_top = fixed_top if fixed_top is not None else top_items(ctx, student, depth)   # [n_users, depth]
        pos = torch.multinomial(probs, int(n_u.sum()), replacement=True)                      # rank positions
        users = torch.repeat_interleave(torch.arange(ctx.split.n_users, device=ctx.device), n_u)
        items = guide_top[users, pos]
        with torch.no_grad(), eval_mode(teacher):
            q = torch.sigmoid(teacher.pair_logits(users, items) / c.cd_tau)
        sl.kd = KDPairs(counts_to_indptr(n_u), items, coef=c.cd_lambda, target=q)
        return {}

    seed_everything(c.seed * 1009 + 6)
    res = _fit(ctx, [sl], c.epochs, phase="cd student", on_epoch_start=on_epoch, epoch_offset=s_rep["epochs_run"])
    return _ud_result(ctx, sl, t_rep, s_rep, t_report, res)


def _ud_result(ctx: Context, sl: Learner, t_rep: dict, s_rep: dict, t_report: dict, res: FitResult) -> dict:
    pred = {}
    return {"models": {"student": model_report(ctx, sl, pred), "teacher": t_report},
            "history": res.history,
            "pretrain": {"teacher": _strip_history(t_rep), "student": _strip_history(s_rep)},
            "timing": {"pretrain_s": sum(r["seconds_train"] + r["seconds_eval"] for r in (t_rep, s_rep)),
                       "distill_s": res.seconds_train + res.seconds_eval, "predict_s": pred["student"]}}


# ---------------------------------------------------------------- BD and iBD

class BDState:
    """Sampling state of a BD / iBD run: the current samplers and, for iBD, the current round sets."""

    def __init__(self, ctx: Context, teacher: Recommender, student: Recommender, tl: Learner, sl: Learner):
        self.ctx, self.teacher, self.student, self.tl, self.sl = ctx, teacher, student, tl, sl
        self.n_u = ctx.cfg.kd_per_pos * ctx.split.train_counts.to(ctx.device)   # [n_users]
        self.samplers = None
        self.last_refresh = None
        self.sets: dict[str, RoundSet] = {}
        self.rounds: list[dict] = []
        self.refresh_seconds = 0.0
        self.prev_lists: dict[str, torch.Tensor] = {}

    def do_refresh(self, queries=None, keep_lists: bool = False) -> "object":
        c = self.ctx.cfg
        t0 = time.perf_counter()
        self.samplers = None          # free the old CDFs before building new ones
        r = refresh(self.teacher, self.student, self.ctx.split, eps_t=c.eps_t, eps_e=c.eps_e,
                    direction=c.bd_direction, top_n=c.top_n, device=self.ctx.device, queries=queries,
                    keep_lists=keep_lists)
        self.samplers, self.last_refresh = r.samplers, r
        self.refresh_seconds += time.perf_counter() - t0
        return r

    def set_kd(self, pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Give each model its KD pairs: T→S pairs to the student, S→T pairs to the teacher."""
        c = self.ctx.cfg
        self.sl.kd = KDPairs(pairs["ts"][0], pairs["ts"][1], coef=c.gamma_ts, giver=self.teacher, tau=c.tau)
        self.tl.kd = KDPairs(pairs["st"][0], pairs["st"][1], coef=c.gamma_st, giver=self.student, tau=c.tau)

    def bd_epoch(self, epoch: int) -> dict:
        """Plain BD's `on_epoch_start` hook."""
        return self._bd_draw(epoch)[0]

    def _bd_draw(self, epoch: int, keep_lists: bool = False) -> tuple[dict, dict]:
        """Plain BD: refresh every P epochs, draw fresh D_u every epoch -> (log, the drawn pairs)."""
        c = self.ctx.cfg
        log = {}
        if self.samplers is None or (epoch - 1) % c.refresh_every == 0:
            r = self.do_refresh(keep_lists=keep_lists)
            log["overlap@N"] = float(r.overlap.mean())
        pairs = {d: self.samplers[d].sample(self.n_u) for d in DIRS}
        self.set_kd(pairs)
        return log, pairs

    def ibd_epoch(self, epoch: int) -> dict:
        """iBD (SPEC §6): round 0 is plain BD (fresh draws every epoch, for P epochs); each round t = 1..M
        starts with a refresh, the feedback check on what round t-1 distilled, and the new round sets,
        which are then kept for the round's P epochs. After round M: plain BD or more rounds."""
        c = self.ctx.cfg
        P, M = c.refresh_every, c.rounds
        rnd = (epoch - 1) // P
        if rnd > M and c.after_rounds == "bd":      # after the M rounds: plain BD, fresh draws every epoch
            self.sets = {}
            return self.bd_epoch(epoch)
        if rnd == 0:
            log, pairs = self._bd_draw(epoch, keep_lists=epoch == 1)
            drawn = {d: RoundSet(indptr_to_rows(pairs[d][0]), pairs[d][1], torch.zeros_like(pairs[d][1]))
                     for d in DIRS}
            if epoch == 1:                          # every item distilled in round 0 is checked at round 1
                self.sets = drawn
                self._log_round(0, self.last_refresh, None)
            else:
                self.sets = {d: _concat_sets(self.sets[d], drawn[d]) for d in DIRS}
            return dict(log, round=0)
        if (epoch - 1) % P != 0:                    # inside a round t >= 1 the sets stay as they are
            return {}
        queries = {d: (self.sets[d].users, self.sets[d].items) for d in DIRS}
        r = self.do_refresh(queries, keep_lists=True)
        fb, new_sets = {}, {}
        for d in DIRS:
            rank_t, rank_s = r.query_ranks[d]
            giver, receiver = (rank_t, rank_s) if d == "ts" else (rank_s, rank_t)
            fb[d] = feedback(self.sets[d], giver, receiver, c.retire_after, self.ctx.split.n_items)
            carry = fb[d]["carry"] if c.ibd_variant == "full" else torch.zeros_like(fb[d]["carry"])
            new_sets[d], fb[d]["kept"] = build_round_set(
                fb[d]["users"][carry], fb[d]["items"][carry], fb[d]["streak"][carry],
                fb[d]["first"][carry], self.n_u, self.samplers[d])
        self._log_round(rnd, r, fb, new_sets)
        self.sets = new_sets
        self.set_kd({d: (self.sets[d].indptr(self.ctx.split.n_users), self.sets[d].items) for d in DIRS})
        return {"round": rnd, "overlap@N": self.rounds[-1]["overlap@N"]}

    def _log_round(self, rnd: int, r, fb, new_sets=None) -> None:
        """Per-round record (SPEC §6 step 5): per user and direction, items sampled for this round and,
        from the feedback check on last round's items, checked / corrected / noise / retired / carried;
        per user, the overlap of the two models' top-N lists and how much each list changed since the
        last round (from the recommendation-list matrices, which are not stored: they are 2 × users × N)."""
        n_users = self.ctx.split.n_users
        sets = new_sets if new_sets is not None else self.sets
        n = min(self.ctx.cfg.top_n, self.ctx.split.n_items)
        entry = {"round": rnd, "overlap@N": float(r.overlap.mean()),
                 "overlap_per_user": encode(torch.round(r.overlap * n).int())}
        if r.top_lists:
            for m in ("T", "S"):
                if m in self.prev_lists:
                    entry[f"list_stability_{m}"] = encode(_row_overlap(self.prev_lists[m], r.top_lists[m]))
            self.prev_lists = r.top_lists
        for d in DIRS:
            per_user = {"sampled": torch.bincount(sets[d].users, minlength=n_users)}
            if fb is not None:
                f = fb[d]
                per_user["corrected"] = torch.bincount(f["users"][f["corrected"]], minlength=n_users)
                per_user["noise"] = torch.bincount(f["users"][f["noise"]], minlength=n_users)
                per_user["retired"] = torch.bincount(f["users"][f["retired"]], minlength=n_users)
                per_user["carried"] = f["kept"]
                per_user["checked"] = torch.bincount(f["users"], minlength=n_users)
            entry[d] = {"total": {k: int(v.sum()) for k, v in per_user.items()},
                        "per_user": {k: encode(v) for k, v in per_user.items()}}
        self.rounds.append(entry)


def _concat_sets(a: RoundSet, b: RoundSet) -> RoundSet:
    """Two sets of pairs as one, grouped by user (stable: each user's pairs keep their draw order)."""
    users, items, streak = (torch.cat([getattr(a, f), getattr(b, f)]) for f in ("users", "items", "streak"))
    o = torch.sort(users, stable=True).indices
    return RoundSet(users[o], items[o], streak[o])


def _row_overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row, how many entries two [n, N] item lists share (vectorised: sort both, count matches)."""
    n_cols = max(int(a.max()), int(b.max())) + 1
    key_a = torch.sort(a + torch.arange(len(a), device=a.device)[:, None] * n_cols, dim=1).values
    key_b = b + torch.arange(len(b), device=b.device)[:, None] * n_cols
    pos = torch.searchsorted(key_a.reshape(-1), key_b.reshape(-1)).clamp_(max=key_a.numel() - 1)
    return (key_a.reshape(-1)[pos] == key_b.reshape(-1)).view(b.shape).sum(1)


def run_bd(ctx: Context, improved: bool = False) -> dict:
    """BD (or iBD when `improved`): warm-up both models alone, then distil both ways at once."""
    c = ctx.cfg
    tl, t_rep = warm_learner(ctx, "teacher")
    sl, s_rep = warm_learner(ctx, "student")
    teacher, student = tl.model, sl.model
    warm = {"teacher": evaluate(teacher, ctx.split, "test", c.ks), "student": evaluate(student, ctx.split, "test", c.ks)}
    state = BDState(ctx, teacher, student, tl, sl)
    seed_everything(c.seed * 1009 + 7)
    hook = state.ibd_epoch if improved else state.bd_epoch
    res = _fit(ctx, [tl, sl], c.epochs, phase="ibd" if improved else "bd", on_epoch_start=hook, track_test=True,
               epoch_offset=max(t_rep["epochs_run"], s_rep["epochs_run"]))
    pred = {}
    out = {"models": {"teacher": model_report(ctx, tl, pred), "student": model_report(ctx, sl, pred)},
           "history": res.history,
           "pretrain": {"teacher": _strip_history(t_rep), "student": _strip_history(s_rep)},
           "warmup_test": warm,
           "timing": {"pretrain_s": sum(r["seconds_train"] + r["seconds_eval"] for r in (t_rep, s_rep)),
                      "distill_s": res.seconds_train + res.seconds_eval,
                      "refresh_s": state.refresh_seconds, "predict_s": pred["student"],
                      "predict_teacher_s": pred["teacher"],
                      "epoch_s_mean": res.seconds_train / max(res.epochs_run, 1)}}
    if improved:
        out["rounds"] = state.rounds
    return out
