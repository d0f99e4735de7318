"""InfoNCE: softmax cross-entropy of the positive against the negatives of its row."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shopaug.losses._scores import check_scores, weighted_mean


class InfoNCELoss(nn.Module):
    """Softmax cross-entropy over ``[positive, negatives]`` with a temperature (InfoNCE).

    For row ``i`` with scores ``s_i0`` (positive) and ``s_ij`` (negatives)::

        logit_ij = s_ij / T - log_q_ij
        L_i      = -log( exp(logit_i0) / sum_j exp(logit_ij) )
        L        = sum_i w_i * L_i / sum_i w_i

    With cosine-similarity scores, ``T = 0.05`` (scale 20) is the usual choice, as in
    sentence-transformers' ``MultipleNegativesRankingLoss``; this loss is that one once the
    caller has put the other rows' positives into the negative columns (in-batch negatives).

    ``log_q`` is the sampling-bias (logQ) correction of Yi et al., "Sampling-bias-corrected
    neural modeling for large corpus item recommendations" (RecSys 2019): the log-probability
    with which each candidate was sampled, subtracted from its logit so that popular in-batch
    negatives are not over-penalised. Masked-out columns take no part in the softmax.

    Inputs:
        ========================  ==============================  ===========================
        argument                  shape                           meaning
        ========================  ==============================  ===========================
        ``scores``                ``(batch, 1 + n)``              column 0 is the positive
        ``mask`` (optional)       ``(batch, 1 + n)``              bool; False = padding
        ``weights`` (optional)    ``(batch,)``                    per-row weights, default 1
        ``log_q`` (optional)      ``(batch, 1 + n)`` or ``(1+n,)``  log sampling probability
        ========================  ==============================  ===========================

    Returns a scalar tensor.

    Example:
        >>> import torch
        >>> loss = InfoNCELoss(temperature=1.0)
        >>> round(loss(torch.tensor([[2.0, 0.0, 0.0]])).item(), 4)
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
        mask: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
        log_q: torch.Tensor | None = None,
    ) -> torch.Tensor:
        mask, weights = check_scores(scores, mask, weights)
        logits = scores / self.temperature  # (batch, 1 + n)
        if log_q is not None:
            if log_q.shape not in (scores.shape, scores.shape[1:]):
                raise ValueError(
                    f"log_q must have shape {tuple(scores.shape)} or ({scores.shape[1]},), "
                    f"got {tuple(log_q.shape)}"
                )
            logits = logits - log_q
        logits = logits.masked_fill(~mask, float("-inf"))
        targets = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
        per_row = F.cross_entropy(logits, targets, reduction="none")  # (batch,)
        return weighted_mean(per_row, weights)
