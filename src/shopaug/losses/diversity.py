"""The seed article's diversity term, in a bounded form that is safe to optimise."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from shopaug.losses._scores import check_scores, weighted_mean


class DiversityLoss(nn.Module):
    r"""Bounded form of ``L_div = -(1/N) sum log(p / (1 - p))``.

    The term as the seed article writes it::

        p     = M(q) * r + (1 - M(q)) * (1 - r)
        L_div = -(1/N) * sum log(p / (1 - p))

    where ``M(q) = sigmoid(s / T)`` is the model's probability that the item is relevant to
    query ``q`` (``s`` its score), ``r`` in ``{0, 1}`` the target (1 for the positive, 0 for a
    negative) and ``N`` the number of (query, item) terms. ``p`` is then the probability the
    model gives to the *correct* label, and ``log(p / (1 - p))`` its log-odds. For ``r`` in
    ``{0, 1}`` that log-odds is exactly ``z = (2r - 1) * s / T``, so the term as written is
    ``-mean(z)``: linear in the scores and **unbounded** — ``p -> 1`` drives it to ``-inf``
    (the optimiser can lower the loss forever by inflating scores, swamping the ranking loss
    it is added to) and ``p -> 0`` to ``+inf``; computed through ``p`` itself it also gives
    ``log 0`` and NaN gradients in float32 once ``|s / T|`` passes about 17.

    This module computes it in logit space with a smooth floor::

        L_div = (1/N) * sum softplus(m - z),      m = log((1 - eps) / eps)

    * For ``z << m`` (the model is not yet confident), ``softplus(m - z) ~= m - z``: the
      original term plus the constant ``m``, with the **same gradient** (``-1`` per unit
      log-odds).
    * For ``z >> m`` (``p`` beyond ``1 - eps``) it goes smoothly to 0: bounded below by 0, so
      confident, correct items stop pulling on the weights. ``eps`` plays the role of clamping
      ``p`` to ``[eps, 1 - eps]``, without the dead gradient of a hard clamp.
    * For ``z -> -inf`` it grows linearly, like the original, with gradient at most 1 in
      magnitude: finite for any finite score.

    Rows are averaged over their valid columns, then with their weights, as in the other losses.

    Inputs:
        ========================  ==================  =======================================
        argument                  shape               meaning
        ========================  ==================  =======================================
        ``scores``                ``(batch, 1 + n)``  float logits, column 0 is the positive
        ``mask`` (optional)       ``(batch, 1 + n)``  bool; False marks padding columns
        ``weights`` (optional)    ``(batch,)``        float per-row weights, default 1
        ``targets`` (optional)    ``(batch, 1 + n)``  ``r`` in {0, 1}; default 1 in column 0
        ========================  ==================  =======================================

    Returns a scalar tensor, never negative.

    Example:
        >>> import torch
        >>> loss = DiversityLoss(eps=0.5)  # m = 0: softplus(-z)
        >>> round(loss(torch.tensor([[0.0, 0.0]])).item(), 4)  # log 2
        0.6931
    """

    def __init__(self, temperature: float = 1.0, eps: float = 0.01) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not 0.0 < eps <= 0.5:
            raise ValueError(f"eps must be in (0, 0.5], got {eps}")
        self.temperature = temperature
        self.eps = eps
        self.margin = math.log((1.0 - eps) / eps)

    def forward(
        self,
        scores: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        mask, weights = check_scores(scores, mask, weights)
        if targets is None:
            targets = torch.zeros_like(scores)  # (batch, 1 + n)
            targets[:, 0] = 1.0
        else:
            if targets.shape != scores.shape:
                raise ValueError(
                    f"targets must have shape {tuple(scores.shape)}, got {tuple(targets.shape)}"
                )
            if not bool(((targets == 0) | (targets == 1)).all()):
                raise ValueError("targets must be 0 or 1 (r in the diversity term)")
            targets = targets.to(scores.dtype)
        log_odds = (2.0 * targets - 1.0) * scores / self.temperature  # z, (batch, 1 + n)
        element = F.softplus(self.margin - log_odds)  # (batch, 1 + n)
        valid = mask.to(scores.dtype)
        per_row = (element * valid).sum(dim=1) / valid.sum(dim=1)  # (batch,)
        return weighted_mean(per_row, weights)
