"""Input checks shared by every loss: shapes of scores, masks and weights.

Not a public module; each loss calls :func:`check_scores` first so that a wrong shape fails
with a message that names the argument and the expected shape.
"""

from __future__ import annotations

import torch


def check_scores(
    scores: torch.Tensor,
    mask: torch.Tensor | None,
    weights: torch.Tensor | None,
    *,
    min_columns: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``scores`` (batch, 1+n), ``mask`` and ``weights``; return filled-in versions.

    Args:
        scores: Score matrix ``(batch, 1 + n)``, positive in column 0.
        mask: Optional bool ``(batch, 1 + n)``; False marks padding columns. Column 0 must be
            True everywhere.
        weights: Optional per-row weights ``(batch,)``, non-negative.
        min_columns: Smallest number of columns the loss accepts.

    Returns:
        ``(mask, weights)`` with defaults filled in: all-True mask, unit weights.

    Raises:
        ValueError: On a wrong rank, shape, dtype, or a masked-out positive.
    """
    if scores.dim() != 2:
        raise ValueError(
            f"scores must have shape (batch, 1 + n_negatives), got {tuple(scores.shape)}"
        )
    batch, columns = scores.shape
    if batch == 0:
        raise ValueError("scores has an empty batch")
    if columns < min_columns:
        raise ValueError(
            f"scores needs at least {min_columns} column(s) (positive first), got {columns}"
        )
    if mask is None:
        mask = torch.ones_like(scores, dtype=torch.bool)
    else:
        if mask.shape != scores.shape or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be a bool tensor of shape {tuple(scores.shape)}, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        if not bool(mask[:, 0].all()):
            raise ValueError("mask[:, 0] (the positive column) must be True in every row")
    if weights is None:
        weights = torch.ones(batch, dtype=scores.dtype, device=scores.device)
    elif weights.shape != (batch,):
        raise ValueError(f"weights must have shape ({batch},), got {tuple(weights.shape)}")
    return mask, weights


def weighted_mean(per_row: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum(w_i * l_i) / sum(w_i)`` over rows; 0 (with a graph) when every weight is 0."""
    total = weights.sum()
    return (per_row * weights).sum() / total.clamp_min(torch.finfo(per_row.dtype).tiny)
