"""NeuMF, neural matrix factorisation (He et al., WWW 2017): SPEC §3's second base model."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .base import Recommender, rows

# NeuMF.score_all's tiles of [users, dim, items] hidden activations, in floats: on the CPU about 1 MB (a
# core's cache, so the tower's matmul reads cache rather than memory); on a GPU up to 1 GB. A tile spans
# _NEUMF_ITEM_TILE items (all items when the device is not listed) and as many users as fit.
_NEUMF_ITEM_TILE: dict[str, int] = {"cpu": 4096}
_NEUMF_CHUNK_FLOATS = {"cpu": 1 << 18, "cuda": 1 << 28}


@contextmanager
def _one_thread_per_op() -> Iterator[int]:
    """Let the block's torch ops run single-threaded (yielding how many threads there were), so that
    that many Python threads can each run ops on their own core without the ops' own threads contending."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


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
        # fc1 on [p'_u; q'_i] splits into a user part a_u and an item part b_i, computed once per user
        # and once per item instead of once per pair. The rest of the tower, w3 · relu(W2 relu(a_u + b_i)
        # + b2), runs on tiles laid out [users, dim, items] (long, contiguous item rows for the matmul) in
        # buffers allocated once. On a CPU with k threads, k Python threads each take a share of the users
        # and run single-threaded ops: small ops parallelise badly inside torch, and a user's scores are
        # then the same whatever k is.
        d, w_out = self.dim, self.out.weight[0]
        w1u, w1i = self.fc1.weight[:, :d], self.fc1.weight[:, d:]
        a = (self.pm(users) @ w1u.T + self.fc1.bias).unsqueeze(-1)    # [b, d, 1]
        b_t = (self.qm.weight @ w1i.T).T.contiguous()                # [d, n_items]
        out = (self.p(users) * w_out[:d]) @ self.q.weight.T          # [b, n_items]: the GMF part
        weights = (self.fc2.weight.contiguous(), self.fc2.bias.unsqueeze(-1), w_out[None, d:].contiguous())
        dev = users.device.type
        if dev != "cpu" or torch.get_num_threads() == 1 or len(users) == 1:
            self._tower(a, b_t, weights, out)
        else:
            with _one_thread_per_op() as k, ThreadPoolExecutor(k) as pool:
                bounds = torch.linspace(0, len(users), k + 1).round().long().tolist()
                jobs = [pool.submit(self._tower, a[s:e], b_t, weights, out[s:e])
                        for s, e in zip(bounds[:-1], bounds[1:]) if e > s]
                for job in jobs:
                    job.result()
        return out.add_(self.out.bias)

    @staticmethod
    @torch.no_grad()   # grad mode is per thread, and the tower runs in worker threads too
    def _tower(a: torch.Tensor, b_t: torch.Tensor, weights: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        """Add the MLP tower's logits for users' first-layer parts a [b, d, 1] and the items' b_t [d, n]
        to out [b, n] in place, tile by tile."""
        w2, b2, w3 = weights                                          # [d/2, d], [d/2, 1], [1, d/2]
        d, n = b_t.shape
        dev = b_t.device.type
        tile = min(n, _NEUMF_ITEM_TILE.get(dev, n))
        chunk = max(1, _NEUMF_CHUNK_FLOATS.get(dev, _NEUMF_CHUNK_FLOATS["cpu"]) // (tile * d))
        chunk = min(chunk, len(a))
        h1 = out.new_empty((chunk, d, tile))
        h2 = out.new_empty((chunk, len(w2), tile))
        tower = out.new_empty((chunk, 1, tile))
        for s in range(0, len(a), chunk):
            c = min(chunk, len(a) - s)
            for i in range(0, n, tile):
                t = min(tile, n - i)
                x1, x2, y = h1[:c, :, :t], h2[:c, :, :t], tower[:c, :, :t]
                torch.add(a[s:s + c], b_t[:, i:i + t], out=x1).relu_()    # [c, d, t]
                torch.matmul(w2, x1, out=x2).add_(b2).relu_()              # [c, d/2, t]
                out[s:s + c, i:i + t] += torch.matmul(w3, x2, out=y)[:, 0]
