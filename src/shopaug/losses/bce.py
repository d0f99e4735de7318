"""Binary cross-entropy on (positive, negatives) scores."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shopaug.losses._scores import check_scores, weighted_mean


class BCELoss(nn.Module):
    """Pointwise binary cross-entropy: the positive is label 1, every negative is label 0.

    Each score is read as a logit ``s / temperature``; the loss of a row is the mean over its
    valid columns of ``BCEWithLogits(s_ij / T, y_ij)`` with ``y_i0 = 1`` and ``y_ij = 0`` for
    ``j >= 1``, and rows are averaged with their weights::

        L = sum_i w_i * mean_j BCE(s_ij / T, y_ij) / sum_i w_i

    Pointwise losses calibrate scores as probabilities (useful for CTR models) but, unlike
    :class:`~shopaug.losses.infonce.InfoNCELoss`, do not compare candidates of one query with
    each other.

    Inputs:
        ========================  ==================  =======================================
        argument                  shape               meaning
        ========================  ==================  =======================================
        ``scores``                ``(batch, 1 + n)``  float; column 0 is the positive
        ``mask`` (optional)       ``(batch, 1 + n)``  bool; False marks padding columns
        ``weights`` (optional)    ``(batch,)``        float per-row weights, default 1
        ========================  ==================  =======================================

    Returns a scalar tensor.

    Example:
        >>> import torch
        >>> loss = BCELoss()
        >>> round(loss(torch.tensor([[2.0, -1.0, 0.0]])).item(), 4)
        0.3778
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(
        self,
        scores: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        mask, weights = check_scores(scores, mask, weights)
        targets = torch.zeros_like(scores)  # (batch, 1 + n)
        targets[:, 0] = 1.0
        element = F.binary_cross_entropy_with_logits(
            scores / self.temperature, targets, reduction="none"
        )  # (batch, 1 + n)
        valid = mask.to(scores.dtype)
        per_row = (element * valid).sum(dim=1) / valid.sum(dim=1)  # (batch,)
        return weighted_mean(per_row, weights)
