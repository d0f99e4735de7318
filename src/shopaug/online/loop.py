"""The steps of one online round, for ``shopaug online`` to call in order.

1. :func:`collect_feedback`: new events from the store -> click samples (not yet consumed).
2. The caller fine-tunes a challenger on them and evaluates champion and challenger per query
   (``train`` and ``eval`` packages).
3. :func:`gate_and_promote`: the gate decides; on promotion the run's pointer is swapped and
   the running service, if any, is told to reload.
4. :meth:`FeedbackStore.mark_consumed` with ``FeedbackBatch.last_id`` once the round is done,
   so a crash in between replays the same events next time instead of losing them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shopaug.errors import require
from shopaug.feedback.store import DEFAULT_CONSUMER, FeedbackStore, events_frame
from shopaug.online.clicks import PositionBiasModel, click_samples
from shopaug.online.gate import Decision, decide, promote_model

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedbackBatch:
    """Samples made from the events with ids in ``(first_id - 1, last_id]``."""

    samples: pd.DataFrame
    events: int
    first_id: int | None
    last_id: int | None


def collect_feedback(
    store: FeedbackStore,
    *,
    position_model: PositionBiasModel | None = None,
    max_weight: float = 10.0,
    consumer: str = DEFAULT_CONSUMER,
    limit: int | None = None,
) -> FeedbackBatch:
    """Turn the events ``consumer`` has not consumed into click samples (cursor unchanged).

    Args:
        store: the feedback store.
        position_model: propensities; default power law ``1/k``.
        max_weight: clip of the inverse propensity weights.
        consumer: whose cursor to read.
        limit: most events to read.
    """
    events = store.read_new(consumer=consumer, limit=limit)
    if not events:
        empty = click_samples(events_frame([]), position_model)
        return FeedbackBatch(empty, 0, None, None)
    samples = click_samples(events_frame(events), position_model, max_weight=max_weight)
    logger.info(
        "%d new events (ids %d..%d) gave %d samples",
        len(events),
        events[0].id,
        events[-1].id,
        len(samples),
    )
    return FeedbackBatch(samples, len(events), events[0].id, events[-1].id)


def gate_and_promote(
    run_dir: str | Path,
    challenger_dir: str | Path,
    champion_metric: np.ndarray,
    challenger_metric: np.ndarray,
    *,
    tolerance: float = 0.005,
    service_url: str | None = None,
    admin_token: str | None = None,
) -> Decision:
    """Decide; on promotion swap ``run_dir/current`` to the challenger and reload the service.

    Args:
        run_dir: the run directory the service serves.
        challenger_dir: the retrained model directory (copied, never moved).
        champion_metric: per-query metric of the current model.
        challenger_metric: per-query metric of the challenger on the same queries.
        tolerance: see :func:`shopaug.online.gate.decide`.
        service_url: base URL of a running service to ``POST /admin/reload`` after the swap.
        admin_token: the service's admin token (needed with ``service_url``).

    Raises:
        httpx.HTTPStatusError: the service refused the reload (the pointer has moved; a
            restart or a later reload picks the new model up).
    """
    decision = decide(champion_metric, challenger_metric, tolerance=tolerance)
    if not decision.promote:
        return decision
    promoted = promote_model(run_dir, challenger_dir)
    logger.info("promoted %s as %s", challenger_dir, promoted)
    if service_url is not None:
        httpx = require("httpx", "serve")
        headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        response = httpx.post(
            service_url.rstrip("/") + "/admin/reload", headers=headers, timeout=300.0
        )
        response.raise_for_status()
    return decision
