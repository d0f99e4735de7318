"""Losses on score matrices ``(batch, 1 + n)`` with the positive in column 0.

Every loss is an ``nn.Module`` whose ``forward(scores, *, mask=None, weights=None)`` returns a
scalar; none of them sees the model. :data:`LOSSES` maps the names used in configs to the
ranking losses; :class:`TotalLoss` adds the bounded diversity term.
"""

from __future__ import annotations

from torch import nn

from shopaug.losses.bce import BCELoss
from shopaug.losses.bpr import BPRLoss
from shopaug.losses.diversity import DiversityLoss
from shopaug.losses.infonce import InfoNCELoss
from shopaug.losses.total import TotalLoss

LOSSES: dict[str, type[nn.Module]] = {
    "bce": BCELoss,
    "infonce": InfoNCELoss,
    "bpr": BPRLoss,
    "diversity": DiversityLoss,
}
"""Loss classes by config name; each takes ``temperature=`` in its constructor."""

__all__ = ["LOSSES", "BCELoss", "BPRLoss", "DiversityLoss", "InfoNCELoss", "TotalLoss"]
