"""NeuMF, neural matrix factorisation (He et al., WWW 2017): SPEC §3's second base model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Recommender, rows

# NeuMF.score_all's tiles of [users, items, dim] hidden activations, in floats: on the CPU about 4 MB
# (in cache, so the tower's matmul reads cache rather than memory, with few enough ops that per-op
# overhead stays small); on a GPU up to 1 GB. Tiles span all items unless _NEUMF_ITEM_TILE says otherwise.
_NEUMF_ITEM_TILE: dict[str, int] = {}
_NEUMF_CHUNK_FLOATS = {"cpu": 1 << 20, "cuda": 1 << 28}


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
