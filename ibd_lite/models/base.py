"""The interface every base model implements, and the losses and helpers they share (SPEC §3).

Every model scores all items for a batch of users (`score_all`, for ranking) and scores given
(user, item) pairs (`pair_logits`, for training and distillation). `cf_loss` is the model's own
collaborative-filtering loss on positive logits [n] and negative logits [n, k], summed.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def pointwise_bce(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Σ −log σ(s_pos) + Σ −log(1 − σ(s_neg)) (CDAE, NeuMF)."""
    return F.softplus(-pos).sum() + F.softplus(neg).sum()


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Σ −log σ(s_pos − s_neg) over each positive's negatives (BPR-MF)."""
    return F.softplus(-(pos.unsqueeze(-1) - neg)).sum()


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Run a block with the models in eval mode (no dropout), restoring each one's mode after."""
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def rows(emb: nn.Embedding, idx: torch.Tensor) -> torch.Tensor:
    """emb(idx) through index_select, whose backward (index_add_) is several times faster on CPU."""
    return emb.weight.index_select(0, idx.reshape(-1)).view(*idx.shape, emb.embedding_dim)


class Recommender(nn.Module):
    """Common interface of the base models."""

    kind: str = ""
    batch_unit: str = "pair"  # "user": an epoch iterates over user batches (CDAE); "pair": over interactions

    def __init__(self, n_users: int, n_items: int, dim: int):
        super().__init__()
        self.n_users, self.n_items, self.dim = n_users, n_items, dim

    def score_all(self, users: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Logits [b, n_items] of every item for each user (eval mode: no dropout)."""
        raise NotImplementedError

    def pair_logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """Logits [n] of the given (user, item) pairs (uses dropout in training mode)."""
        raise NotImplementedError

    def cf_loss(self, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """Summed CF loss for positive logits [n] and negative logits [n, k]."""
        return pointwise_bce(pos, neg)

    def n_params(self) -> int:
        """Number of parameters (frozen ones included: a frozen teacher keeps its size)."""
        return sum(p.numel() for p in self.parameters())
