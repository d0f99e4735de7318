"""Logged impressions and clicks from the feedback store -> bandit rounds for off-policy
evaluation (:mod:`shopaug.eval.off_policy`).

A round is one impression that carries its logging propensity (``/ads/rank`` logs every shown
ad with it). Its reward is 1 when a click on the same product at the same position, under the
same ``query_id``, ``session_id`` and ``user_id``, follows it (by store id) before that product
is shown again there; else 0. Impressions without a propensity (search result pages, rows
written before the store had the column) are not rounds: they are counted and left out, since
an estimator cannot weight them. Clicks that match no impression are counted too.

Example:
    >>> import pandas as pd
    >>> events = pd.DataFrame({
    ...     "id": [1, 2, 3], "event": ["impression", "impression", "click"],
    ...     "product_id": ["ad:men:3", "ad:men:1", "ad:men:3"], "position": [1, 2, 1],
    ...     "query_id": ["ads/men"] * 3, "session_id": ["s"] * 3, "user_id": [None] * 3,
    ...     "propensity": [0.55, 0.05, None]})
    >>> logged_rounds(events).rounds[["product_id", "reward"]].values.tolist()
    [['ad:men:3', 1], ['ad:men:1', 0]]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

#: What identifies where an impression was shown; a click matches on all of them.
MATCH_COLUMNS = ("query_id", "session_id", "user_id", "product_id", "position")
ROUND_COLUMNS = ("id", *MATCH_COLUMNS, "propensity", "reward")


@dataclass(frozen=True)
class LoggedRounds:
    """Bandit rounds read from logged events.

    Attributes:
        rounds: One row per impression with a propensity, in store order: ``id``,
            :data:`MATCH_COLUMNS`, ``propensity`` (float) and ``reward`` (0 or 1).
        without_propensity: Impressions left out because they carry no propensity.
        unmatched_clicks: Clicks that follow no impression of theirs.
    """

    rounds: pd.DataFrame
    without_propensity: int
    unmatched_clicks: int

    @property
    def propensities(self) -> np.ndarray:
        """``(n,)`` float64 logging propensities."""
        return self.rounds["propensity"].to_numpy(dtype=np.float64)

    @property
    def rewards(self) -> np.ndarray:
        """``(n,)`` float64 rewards (clicks)."""
        return self.rounds["reward"].to_numpy(dtype=np.float64)

    @property
    def slots(self) -> np.ndarray:
        """``(n,)`` int64 0-based slots (``position - 1``)."""
        return self.rounds["position"].to_numpy(dtype=np.int64) - 1


def logged_rounds(events: pd.DataFrame) -> LoggedRounds:
    """The rounds of ``events`` (a frame with ``id``, ``event``, ``propensity`` and
    :data:`MATCH_COLUMNS`, such as :func:`shopaug.feedback.events_frame` of
    ``FeedbackStore.read_new``); see the module docstring.

    Raises:
        ValueError: a column is missing, or a propensity is outside (0, 1]; the message names it.
    """
    needed = {"id", "event", "propensity", *MATCH_COLUMNS}
    missing = sorted(needed - set(events.columns))
    if missing:
        raise ValueError(f"events lack the column(s) {missing}; expected the store's columns")
    frame = events.sort_values("id", kind="stable")
    latest: dict[tuple[object, ...], int] = {}
    rows: list[dict[str, object]] = []
    without_propensity = unmatched = 0
    records: list[dict[Any, Any]] = frame.to_dict("records")
    for event in records:
        key = tuple(_plain(event[column]) for column in MATCH_COLUMNS)
        if event["event"] == "impression":
            propensity = _plain(event["propensity"])
            if propensity is None:
                without_propensity += 1
                latest.pop(key, None)  # a later click belongs to this unweighted impression
                continue
            value = float(propensity)  # type: ignore[arg-type]
            if not 0.0 < value <= 1.0:
                raise ValueError(
                    f"event {event['id']}: propensity {value} is outside (0, 1]; expected the "
                    "probability the logging policy showed the item there"
                )
            latest[key] = len(rows)
            rows.append(
                {"id": int(event["id"]), **dict(zip(MATCH_COLUMNS, key)), "propensity": value}
            )
            rows[-1]["reward"] = 0
        elif event["event"] == "click":
            row = latest.get(key)
            if row is None:
                unmatched += 1
            else:
                rows[row]["reward"] = 1
    if without_propensity or unmatched:
        logger.info(
            "logged rounds: %d impressions without a propensity left out, %d clicks matched no "
            "impression",
            without_propensity,
            unmatched,
        )
    rounds = pd.DataFrame(rows, columns=list(ROUND_COLUMNS))
    return LoggedRounds(rounds, without_propensity, unmatched)


def _plain(value: object) -> object:
    """``None`` for missing values (None, NaN), else the value (positions as int)."""
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return None
    if isinstance(value, float | np.floating | np.integer) and float(value).is_integer():
        return int(value)
    return value
