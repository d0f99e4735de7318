"""Multi-positive InfoNCE: every positive of a query against that query's negatives."""

from __future__ import annotations

import torch
from torch import nn


class MultiPositiveInfoNCELoss(nn.Module):
    """Softmax cross-entropy of each positive of a row against the row's negatives.

    A query with several relevant items is one row. Over a shared set of ``m`` items scored
    for every row, ``positive_mask`` marks the row's positives and ``negative_mask`` its
    negatives (own ones and in-batch ones that are not known positives). For row ``i``::

        lse_i  = log sum_{n in N_i} exp(s_in / T)
        L_ip   = -s_ip / T + log( exp(s_ip / T) + exp(lse_i) )     for p in P_i
        L      = sum_{i,p} w_ip * L_ip / sum_{i,p} w_ip

    Each ``L_ip`` is the InfoNCE of one (query, positive) group whose negatives are ``N_i``,
    so one row stands for ``|P_i|`` groups at the cost of one query encoding. Other positives
    of the same query never act as its negatives.

    Inputs:
        =====================  ===============  =====================================
        argument               shape            meaning
        =====================  ===============  =====================================
        ``scores``             ``(batch, m)``   scores of every row against every item
        ``positive_mask``      ``(batch, m)``   bool; the row's positives
        ``negative_mask``      ``(batch, m)``   bool; the row's negatives
        ``positive_weights``   ``(batch, m)``   optional weights of the positive cells
        =====================  ===============  =====================================

    Returns a scalar tensor. A row without a positive contributes nothing; a row without a
    negative has loss 0 for each of its positives.

    Example:
        >>> import torch
        >>> loss = MultiPositiveInfoNCELoss(temperature=1.0)
        >>> scores = torch.tensor([[2.0, 0.0, 0.0]])
        >>> pos, neg = torch.tensor([[True, False, False]]), torch.tensor([[False, True, True]])
        >>> round(loss(scores, positive_mask=pos, negative_mask=neg).item(), 4)
        0.2395
    """

    def __init__(self, temperature: float = 0.05) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(
        self,
        scores: torch.Tensor,
        *,
        positive_mask: torch.Tensor,
        negative_mask: torch.Tensor,
        positive_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if scores.dim() != 2:
            raise ValueError(f"scores must be (batch, m), got shape {tuple(scores.shape)}")
        for name, mask in (("positive_mask", positive_mask), ("negative_mask", negative_mask)):
            if mask.shape != scores.shape or mask.dtype != torch.bool:
                raise ValueError(
                    f"{name} must be a bool tensor of shape {tuple(scores.shape)}, got "
                    f"{mask.dtype} {tuple(mask.shape)}"
                )
        if bool((positive_mask & negative_mask).any()):
            raise ValueError("an item is both a positive and a negative of the same row")
        weights = positive_mask.to(scores.dtype)
        if positive_weights is not None:
            if positive_weights.shape != scores.shape:
                raise ValueError(
                    f"positive_weights must have shape {tuple(scores.shape)}, "
                    f"got {tuple(positive_weights.shape)}"
                )
            if bool((positive_weights < 0).any()):
                raise ValueError("positive_weights must be >= 0")
            weights = weights * positive_weights
        total = weights.sum()
        if total <= 0:
            raise ValueError("no positive cell with a positive weight in the batch")
        logits = scores / self.temperature  # (batch, m)
        negatives = logits.masked_fill(~negative_mask, float("-inf"))
        lse = torch.logsumexp(negatives, dim=1, keepdim=True)  # (batch, 1); -inf without any
        per_cell = torch.logaddexp(logits, lse) - logits  # (batch, m)
        return (per_cell * weights).sum() / total
