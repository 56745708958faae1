"""Euclidean distances that do not depend on the machine's BLAS rounding.

`torch.cdist` switches to ‖a‖² − 2a·b + ‖b‖² (one matrix product) above a size threshold; its
rounding error grows with the vectors' norms (about 0.005 for 16×16 images), so an exact copy
can come out at a distance of 0.004 on one machine and 0 on another. Here distances are computed
from the differences (exact for copies: 0.0), and the fast matrix product is used only to
shortlist candidates whose distances are then recomputed exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

EXACT = "donot_use_mm_for_euclid_dist"


def pairwise_distances(a: Tensor, b: Tensor, chunk: int = 1024) -> Tensor:
    """(len(a), len(b)) L2 distances from differences: exact 0 for identical rows."""
    a, b = a.flatten(1).float(), b.flatten(1).float()
    return torch.cat([torch.cdist(rows, b, compute_mode=EXACT) for rows in a.split(chunk)])


def nearest(queries: Tensor, bank: Tensor, exclude_self: bool = False, shortlist: int = 8,
            chunk: int = 512) -> tuple[Tensor, Tensor]:
    """(distance, index) of the nearest bank row for each query row (both flattened to vectors).

    The matrix product ranks the bank (fast, slightly rounded); the `shortlist` best are then
    measured exactly, so the distance returned is exact and a copy is found at 0.0.
    `exclude_self`: queries are bank[:len(queries)], and a row is not its own neighbour.
    """
    queries, bank = queries.flatten(1).float(), bank.flatten(1).float()
    centre = bank.mean(dim=0)  # distances do not move; the product's rounding shrinks with the norms
    queries, bank = queries - centre, bank - centre
    bank_norms = (bank**2).sum(dim=1)
    shortlist = min(shortlist, len(bank) - int(exclude_self))
    distances, indices = [], []
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        rough = bank_norms[None] - 2 * q @ bank.T  # ‖q‖² is the same for every candidate of a row
        rows = torch.arange(len(q))
        if exclude_self:
            rough[rows, rows + start] = float("inf")
        candidates = rough.topk(shortlist, dim=1, largest=False).indices  # (q, shortlist)
        exact = (bank[candidates] - q[:, None]).norm(dim=2)
        best = exact.min(dim=1)
        distances.append(best.values)
        indices.append(candidates[rows, best.indices])
    return torch.cat(distances), torch.cat(indices)
