"""CDAE, the collaborative denoising auto-encoder (Wu et al., WSDM 2016): SPEC §3's first base model."""

from __future__ import annotations

import torch
from torch import nn

from ..sparse import csr_gather, unique_ids
from .base import Recommender, rows


class CDAE(Recommender):
    """Collaborative denoising auto-encoder: z = σ(W ỹ_u + V_u + b), s_u = W' z + b'."""

    kind = "cdae"
    batch_unit = "user"

    def __init__(self, n_users: int, n_items: int, dim: int, train_indptr: torch.Tensor,
                 train_indices: torch.Tensor, dropout: float = 0.5):
        super().__init__(n_users, n_items, dim)
        self.dropout = dropout
        self.enc = nn.EmbeddingBag(n_items, dim, mode="sum")       # W (one row per input item)
        self.user = nn.Embedding(n_users, dim)                     # V_u
        self.enc_bias = nn.Parameter(torch.zeros(dim))             # b
        self.dec = nn.Embedding(n_items, dim)                      # W' (one row per output item)
        self.dec_bias = nn.Parameter(torch.zeros(n_items))         # b'
        for emb in (self.enc, self.user, self.dec):
            nn.init.normal_(emb.weight, std=0.01)
        self.register_buffer("indptr", train_indptr.clone(), persistent=False)
        self.register_buffer("indices", train_indices.clone(), persistent=False)

    def encode(self, users: torch.Tensor) -> torch.Tensor:
        """Hidden code z [b, dim] from each user's training items (input dropout when training)."""
        _, items, counts = csr_gather(self.indptr, self.indices, users)
        offsets = torch.cumsum(counts, 0) - counts                  # [b] start of each bag
        weights = None
        if self.training and self.dropout > 0:
            keep = torch.rand(items.shape, device=items.device) >= self.dropout
            weights = keep.float() / (1.0 - self.dropout)
        h = self.enc(items, offsets, per_sample_weights=weights)
        return torch.sigmoid(h + rows(self.user, users) + self.enc_bias)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.encode(users) @ self.dec.weight.T + self.dec_bias   # [b, n_items]

    def pair_logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        uniq, inv = unique_ids(users, self.n_users)                 # one dropout mask per user per call
        z = self.encode(uniq)
        return (z.index_select(0, inv) * rows(self.dec, items)).sum(-1) + self.dec_bias.index_select(0, items)
