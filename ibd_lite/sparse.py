"""Small vectorised helpers for per-user item lists stored as CSR (indptr, values)."""

from __future__ import annotations

import torch


def csr_gather(indptr: torch.Tensor, values: torch.Tensor, rows: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate the value lists of `rows` without a Python loop.

    Returns (row_of_each [m] as positions 0..len(rows)-1, values [m], counts [len(rows)]).
    """
    start, end = indptr[rows], indptr[rows + 1]
    counts = end - start
    offsets = torch.cumsum(counts, 0) - counts
    local = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), counts)
    pos = torch.arange(int(counts.sum()), device=rows.device) - offsets[local]
    return local, values[start[local] + pos], counts


def counts_to_indptr(counts: torch.Tensor) -> torch.Tensor:
    """CSR row pointers [n+1] from per-row counts [n]."""
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
