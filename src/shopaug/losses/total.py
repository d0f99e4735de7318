"""The training objective: a ranking loss plus an optional, weighted diversity term."""

from __future__ import annotations

import torch
from torch import nn


class TotalLoss(nn.Module):
    """``L = L_rec + lam * L_div``; with ``lam == 0`` (the default) ``L_div`` is not computed.

    Both parts take the same ``(scores, mask=, weights=)`` arguments, so any loss of
    :data:`shopaug.losses.LOSSES` can be the ranking part. ``log_q`` (the sampling-bias
    correction) goes to the ranking part only, and only when given (InfoNCE takes it); the
    diversity term sees the uncorrected scores.

    Example:
        >>> import torch
        >>> from shopaug.losses import BPRLoss, DiversityLoss
        >>> total = TotalLoss(BPRLoss(), DiversityLoss(eps=0.5), lam=0.5)
        >>> round(total(torch.tensor([[0.0, 0.0]])).item(), 4)  # log 2 + 0.5 * log 2
        1.0397
    """

    def __init__(self, rec_loss: nn.Module, div_loss: nn.Module | None = None, lam: float = 0.0):
        super().__init__()
        if lam < 0:
            raise ValueError(f"lam (the weight of the diversity term) must be >= 0, got {lam}")
        if lam > 0 and div_loss is None:
            raise ValueError("lam > 0 needs a div_loss")
        self.rec_loss = rec_loss
        self.div_loss = div_loss
        self.lam = lam

    def forward(
        self,
        scores: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
        log_q: torch.Tensor | None = None,
    ) -> torch.Tensor:
        extra = {} if log_q is None else {"log_q": log_q}
        loss: torch.Tensor = self.rec_loss(scores, mask=mask, weights=weights, **extra)
        if self.lam > 0 and self.div_loss is not None:
            loss = loss + self.lam * self.div_loss(scores, mask=mask, weights=weights)
        return loss
