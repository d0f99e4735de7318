"""Bayesian personalised ranking: pairwise logistic loss of the positive over each negative."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shopaug.losses._scores import check_scores, weighted_mean


class BPRLoss(nn.Module):
    """BPR (Rendle et al., UAI 2009): ``-log sigmoid(s_pos - s_neg)`` averaged over pairs.

    For row ``i`` with valid negatives ``j = 1..n_i``::

        L_i = mean_j softplus(-(s_i0 - s_ij) / T)      # = -log sigmoid((s_i0 - s_ij) / T)
        L   = sum_i w_i * L_i / sum_i w_i

    ``softplus`` is the numerically stable form of ``-log sigmoid(-x)``. A row without a valid
    negative has no pair and gets weight 0; at least one row must have a pair.

    Inputs:
        ========================  ==================  =======================================
        argument                  shape               meaning
        ========================  ==================  =======================================
        ``scores``                ``(batch, 1 + n)``  column 0 is the positive, ``n >= 1``
        ``mask`` (optional)       ``(batch, 1 + n)``  bool; False marks padding columns
        ``weights`` (optional)    ``(batch,)``        float per-row weights, default 1
        ========================  ==================  =======================================

    Returns a scalar tensor.

    Example:
        >>> import torch
        >>> loss = BPRLoss()
        >>> round(loss(torch.tensor([[1.0, 1.0]])).item(), 4)  # log 2
        0.6931
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
        mask, weights = check_scores(scores, mask, weights, min_columns=2)
        margins = (scores[:, :1] - scores[:, 1:]) / self.temperature  # (batch, n)
        valid = mask[:, 1:].to(scores.dtype)  # (batch, n)
        pairs = valid.sum(dim=1)  # (batch,)
        if not bool((pairs > 0).any()):
            raise ValueError("BPRLoss needs at least one row with a valid negative column")
        per_row = (F.softplus(-margins) * valid).sum(dim=1) / pairs.clamp_min(1.0)
        return weighted_mean(per_row, weights * (pairs > 0).to(scores.dtype))
