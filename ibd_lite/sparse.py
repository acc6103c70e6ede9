"""Small vectorised helpers for per-user item lists stored as CSR (indptr, values)."""

from __future__ import annotations

import torch


def csr_positions(indptr: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions in the CSR value array of every entry of `rows`, without a Python loop.

    Returns (row_of_each [m] as positions 0..len(rows)-1, positions [m], counts [len(rows)]).
    """
    start, end = indptr[rows], indptr[rows + 1]
    counts = end - start
    offsets = torch.cumsum(counts, 0) - counts
    local = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), counts)
    pos = torch.arange(int(counts.sum()), device=rows.device) - offsets[local]
    return local, start[local] + pos, counts


def csr_gather(indptr: torch.Tensor, values: torch.Tensor, rows: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate the value lists of `rows`: (row_of_each [m], values [m], counts [len(rows)])."""
    local, positions, counts = csr_positions(indptr, rows)
    return local, values[positions], counts


def indptr_to_rows(indptr: torch.Tensor) -> torch.Tensor:
    """Row index of every CSR entry [indptr[-1]] (the inverse of `counts_to_indptr`)."""
    counts = indptr[1:] - indptr[:-1]
    return torch.repeat_interleave(torch.arange(len(counts), device=indptr.device), counts)


def counts_to_indptr(counts: torch.Tensor) -> torch.Tensor:
    """CSR row pointers [n+1] from per-row counts [n]."""
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


def unique_ids(ids: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.unique(ids, return_inverse=True) for ids in [0, n), by marking instead of sorting (O(n + len))."""
    present = torch.zeros(n, dtype=torch.bool, device=ids.device)
    present[ids] = True
    slot = torch.cumsum(present, 0) - 1                     # position of each present id among the present ones
    return present.nonzero().squeeze(1), slot[ids]
