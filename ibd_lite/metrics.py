"""Full-ranking top-K metrics (SPEC §2): every item is scored, ties count against the target."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import torch

from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .data import Split

DEFAULT_KS: tuple[int, ...] = (50, 100)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among the non-excluded items; equal scores rank above the target.

    scores [b, n_items] float, targets [b] long, exclude [b, n_items] bool -> [b] long.
    A NaN score of the target ranks it last (a broken model cannot look good).
    """
    if scores.shape != exclude.shape or scores.shape[0] != targets.shape[0]:
        raise ConfigError(f"shape mismatch: scores {tuple(scores.shape)}, exclude {tuple(exclude.shape)}, "
                          f"targets {tuple(targets.shape)}; expected [b, n_items], [b, n_items], [b]")
    t = scores.gather(1, targets.view(-1, 1))                      # [b, 1]
    above = (scores >= t) | torch.isnan(t)                          # ties and NaN count against the target
    above &= ~exclude
    above.scatter_(1, targets.view(-1, 1), False)                   # the target does not outrank itself
    return above.sum(dim=1)


def metrics_from_ranks(ranks: torch.Tensor, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """H@K and N@K averaged over users from 0-based target ranks."""
    r = ranks.double()
    out: dict[str, float] = {}
    for k in ks:
        hit = (r < k).double()
        out[f"H@{k}"] = hit.mean().item()
        out[f"N@{k}"] = (hit / torch.log2(r + 2)).mean().item()
    return out


def topk_metrics(scores: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor,
                 ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """{"H@50", "N@50", "H@100", "N@100"} for scores [n_users, n_items], targets [n_users], exclude mask."""
    check_ks(ks, scores.shape[1])
    return metrics_from_ranks(target_ranks(scores, targets, exclude), ks)


def check_ks(ks: Iterable[int], n_items: int) -> None:
    """Every K must be a positive integer no larger than the number of items."""
    for k in ks:
        if not isinstance(k, int) or not 1 <= k <= n_items:
            raise ConfigError(f"K={k!r} is out of range: each K must be an integer in [1, {n_items}] "
                              f"(the number of items)")


@torch.no_grad()
def evaluate(score_fn: "Callable[[torch.Tensor], torch.Tensor] | torch.nn.Module", split: "Split",
             part: str = "valid", ks: Sequence[int] = DEFAULT_KS, batch_users: int = 1024,
             device: "torch.device | str | None" = None, return_ranks: bool = False):
    """Stream full ranking over user batches for `part` ("valid" or "test") of a split.

    `score_fn` maps a LongTensor of users to scores [b, n_items] (a model's `score_all` or the model).
    Returns the metric dict, and the per-user 0-based ranks too when `return_ranks` is set.
    """
    if part not in ("valid", "test"):
        raise ConfigError(f"part must be 'valid' or 'test', got {part!r}")
    check_ks(ks, split.n_items)
    fn = score_fn.score_all if hasattr(score_fn, "score_all") else score_fn
    if device is None:
        device = _module_device(score_fn)
    targets_all = getattr(split, part)
    ranks = []
    for start in range(0, split.n_users, batch_users):
        users = torch.arange(start, min(start + batch_users, split.n_users))
        scores = fn(users.to(device)).float()
        exclude = split.exclude_mask(users, part).to(scores.device)
        ranks.append(target_ranks(scores, targets_all[users].to(scores.device), exclude).cpu())
    r = torch.cat(ranks)
    out = metrics_from_ranks(r, ks)
    return (out, r) if return_ranks else out


def _module_device(obj) -> torch.device:
    if isinstance(obj, torch.nn.Module):
        for p in obj.parameters():
            return p.device
    owner = getattr(obj, "__self__", None)
    if isinstance(owner, torch.nn.Module):
        return _module_device(owner)
    return torch.device("cpu")

