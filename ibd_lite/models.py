"""Base recommenders (SPEC §3): CDAE, NeuMF and BPR-MF behind one interface.

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

from .errors import choice_error
from .sparse import csr_gather, unique_ids

MODELS: tuple[str, ...] = ("cdae", "neumf", "bprmf")
ALIASES = {"bpr": "bprmf", "bpr-mf": "bprmf", "mf": "bprmf"}

# Per-model defaults from SPEC §3 and §5: negatives per positive, BD temperature τ, BD ε_t.
NEG_PER_POS = {"cdae": 5, "neumf": 4, "bprmf": 1}
BD_TAU = {"cdae": 2.0, "neumf": 5.0, "bprmf": 5.0}
BD_EPS_T = {"cdae": 1e-4, "neumf": 1e-2, "bprmf": 1e-2}
# NeuMF.score_all's tiles of [users, items, dim] hidden activations, in floats: on the CPU about 4 MB
# (in cache, so the tower's matmul reads cache rather than memory, with few enough ops that per-op
# overhead stays small); on a GPU up to 1 GB. Tiles span all items unless _NEUMF_ITEM_TILE says otherwise.
_NEUMF_ITEM_TILE: dict[str, int] = {}
_NEUMF_CHUNK_FLOATS = {"cpu": 1 << 20, "cuda": 1 << 28}


def resolve_model(name: str) -> str:
    """Canonical model name; an unknown one is a ConfigError listing the valid names."""
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in MODELS:
        raise choice_error("model", name, list(MODELS) + list(ALIASES))
    return key


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


class NeuMF(Recommender):
    """Neural matrix factorisation: GMF branch p_u ⊙ q_i plus an MLP tower 2d → d → d/2."""

    kind = "neumf"

    def __init__(self, n_users: int, n_items: int, dim: int):
        super().__init__(n_users, n_items, dim)
        half = max(dim // 2, 1)
        self.p, self.q = nn.Embedding(n_users, dim), nn.Embedding(n_items, dim)      # GMF
        self.pm, self.qm = nn.Embedding(n_users, dim), nn.Embedding(n_items, dim)    # MLP inputs
        for emb in (self.p, self.q, self.pm, self.qm):
            nn.init.normal_(emb.weight, std=0.01)
        self.fc1 = nn.Linear(2 * dim, dim)
        self.fc2 = nn.Linear(dim, half)
        self.out = nn.Linear(dim + half, 1)

    def pair_logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        gmf = rows(self.p, users) * rows(self.q, items)
        h = F.relu(self.fc1(torch.cat([rows(self.pm, users), rows(self.qm, items)], -1)))
        h = F.relu(self.fc2(h))
        return self.out(torch.cat([gmf, h], -1)).squeeze(-1)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        # fc1 on [p'_u; q'_i] splits into a user part and an item part, so the first layer is
        # computed once per user and once per item instead of once per pair. The MLP tower then runs
        # on tiles of (users × items) whose hidden activations fit in a core's cache, in buffers
        # allocated once per call.
        d, w_out = self.dim, self.out.weight[0]
        w1u, w1i = self.fc1.weight[:, :d], self.fc1.weight[:, d:]
        a = self.pm(users) @ w1u.T + self.fc1.bias                   # [b, d]
        b_items = self.qm.weight @ w1i.T                             # [n_items, d]
        out = (self.p(users) * w_out[:d]) @ self.q.weight.T          # [b, n_items]: the GMF part
        dev = users.device.type
        n = self.n_items
        tile = min(n, _NEUMF_ITEM_TILE.get(dev, n))
        chunk = max(1, _NEUMF_CHUNK_FLOATS.get(dev, _NEUMF_CHUNK_FLOATS["cpu"]) // (tile * d))
        chunk = min(chunk, len(users))
        half = self.fc2.out_features
        h1 = out.new_empty((chunk, tile, d))
        h2 = out.new_empty((chunk * tile, half))
        tower = out.new_empty(chunk * tile)
        w2t, b2, w3 = self.fc2.weight.T.contiguous(), self.fc2.bias, w_out[d:].contiguous()
        for s in range(0, len(users), chunk):
            c = min(chunk, len(users) - s)
            for i in range(0, n, tile):
                t = min(tile, n - i)
                x1, x2, y = h1[:c, :t], h2[:c * t], tower[:c * t]
                torch.add(a[s:s + c, None, :], b_items[None, i:i + t], out=x1).relu_()    # [c, t, d]
                torch.mm(x1.reshape(c * t, d), w2t, out=x2).add_(b2).relu_()              # [c·t, d/2]
                out[s:s + c, i:i + t] += torch.mv(x2, w3, out=y).view(c, t)
        return out.add_(self.out.bias)


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


def build_model(name: str, split, dim: int) -> Recommender:
    """Instantiate a base model for a split with hidden size / embedding dim `dim`."""
    kind = resolve_model(name)
    if kind == "cdae":
        return CDAE(split.n_users, split.n_items, dim, split.train_indptr, split.train_indices)
    if kind == "neumf":
        return NeuMF(split.n_users, split.n_items, dim)
    return BPRMF(split.n_users, split.n_items, dim)
