"""BPR-MF, matrix factorisation trained with the BPR loss (Rendle et al., UAI 2009)."""

from __future__ import annotations

import torch
from torch import nn

from .base import Recommender, bpr_loss, rows


class BPRMF(Recommender):
    """Matrix factorisation s_ui = p_u · q_i trained with the BPR loss."""

    kind = "bprmf"

    def __init__(self, n_users: int, n_items: int, dim: int):
        super().__init__(n_users, n_items, dim)
        self.p, self.q = nn.Embedding(n_users, dim), nn.Embedding(n_items, dim)
        for emb in (self.p, self.q):
            nn.init.normal_(emb.weight, std=0.01)

    def pair_logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (rows(self.p, users) * rows(self.q, items)).sum(-1)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.p(users) @ self.q.weight.T

    def cf_loss(self, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        return bpr_loss(pos, neg)
