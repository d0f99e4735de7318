"""A click simulator: position-biased cascade users reading real result lists.

The model (a cascade model with position-based examination, "dependent click model" style):

1. A user issues a query and is shown the top ``top_n`` (10) results.
2. They scan from the top. At position ``k`` they examine the result with probability
   ``propensity(k)`` (default ``1 / k``, :meth:`PositionBiasModel.power_law`); an unexamined
   result is skipped and scanning goes on.
3. An examined result is clicked with a probability that depends on its human label:
   Exact 0.9, Partial 0.4, Irrelevant 0.05, unjudged 0.05 by default, plus Gaussian noise of
   standard deviation ``noise`` (0 by default) drawn per examination, clipped to [0, 1].
4. After a click the user stops with probability ``stop_after_click`` (0.5), else scans on.

So the click rate of an Exact product at position 1 is ``propensity(1) * 0.9 = 0.9``, and at
position ``k``, with nothing clicked above it, ``propensity(k) * 0.9``.

Everything random comes from one seeded :class:`numpy.random.Generator`: the same seed, the
same result lists and the same labels give the same clicks. :func:`simulate_session` is the
pure model; :class:`ClickSimulator` drives the real HTTP service (``GET /search``, then
``POST /feedback`` with the impressions and clicks).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from shopaug.data.records import Judgment, Query
from shopaug.errors import require
from shopaug.online.clicks import PositionBiasModel

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

DEFAULT_CLICK_PROBABILITIES: Mapping[str, float] = {
    "Exact": 0.9,
    "Partial": 0.4,
    "Irrelevant": 0.05,
}


@dataclass(frozen=True)
class ClickModel:
    """Parameters of the simulated users (see the module docstring).

    Attributes:
        click_probabilities: human label -> click probability once examined.
        unjudged_probability: click probability of a product without a label.
        stop_after_click: probability of leaving after a click.
        noise: standard deviation of Gaussian noise added to each click probability.
        top_n: results shown per query.
        position_model: examination propensities.
    """

    click_probabilities: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_CLICK_PROBABILITIES)
    )
    unjudged_probability: float = 0.05
    stop_after_click: float = 0.5
    noise: float = 0.0
    top_n: int = 10
    position_model: PositionBiasModel = field(
        default_factory=lambda: PositionBiasModel.power_law(1.0)
    )

    def __post_init__(self) -> None:
        named = {**self.click_probabilities, "unjudged_probability": self.unjudged_probability}
        named["stop_after_click"] = self.stop_after_click
        for name, value in named.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"click model {name!r} is {value}; expected a probability")
        if self.noise < 0:
            raise ValueError(f"noise is {self.noise}; expected 0 or more")
        if self.top_n < 1:
            raise ValueError(f"top_n is {self.top_n}; expected 1 or more")

    def click_probability(self, label: str | None) -> float:
        if label is None:
            return self.unjudged_probability
        return self.click_probabilities.get(label, self.unjudged_probability)


@dataclass(frozen=True, slots=True)
class SimulatedSession:
    """What one simulated user saw and clicked: ``clicked`` holds 1-based positions."""

    shown: tuple[str, ...]
    clicked: tuple[int, ...]


def simulate_session(
    ranked: Sequence[str],
    labels: Mapping[str, str],
    rng: np.random.Generator,
    model: ClickModel | None = None,
) -> SimulatedSession:
    """Simulate one user on one result list.

    Args:
        ranked: product ids, best first (only the first ``model.top_n`` are shown).
        labels: product id -> human label for this query (missing = unjudged).
        rng: the source of randomness.
        model: user parameters; default :class:`ClickModel`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> simulate_session(["a", "b"], {"a": "Exact"}, rng).shown
        ('a', 'b')
    """
    model = model or ClickModel()
    shown = tuple(ranked[: model.top_n])
    clicked: list[int] = []
    for position, product_id in enumerate(shown, start=1):
        if rng.random() >= model.position_model.propensity(position):
            continue
        probability = model.click_probability(labels.get(product_id))
        if model.noise > 0:
            probability = float(np.clip(probability + rng.normal(0.0, model.noise), 0.0, 1.0))
        if rng.random() < probability:
            clicked.append(position)
            if rng.random() < model.stop_after_click:
                break
    return SimulatedSession(shown, tuple(clicked))


def labels_by_query(judgments: Sequence[Judgment]) -> dict[str, dict[str, str]]:
    """query id -> {product id: label}: the ``labels`` of :meth:`ClickSimulator.run_round`."""
    labels: dict[str, dict[str, str]] = {}
    for judgment in judgments:
        labels.setdefault(judgment.query_id, {})[judgment.product_id] = judgment.label
    return labels


class ClickSimulator:
    """Simulated users querying the running service and logging their clicks through it.

    Args:
        model: user parameters.
        seed: seed of the generator behind every session.
    """

    def __init__(self, model: ClickModel | None = None, *, seed: int = 0) -> None:
        self.model = model or ClickModel()
        self.rng = np.random.default_rng(seed)
        self._sessions = 0

    def run_round(
        self,
        client: httpx.Client | str,
        queries: Sequence[Query],
        labels: Mapping[str, Mapping[str, str]],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """One session per query: ``GET /search``, simulate, ``POST /feedback``.

        Args:
            client: an ``httpx.Client`` (a FastAPI ``TestClient`` works) or the service's base
                URL.
            queries: the queries to issue.
            labels: query id -> {product id: label} (see :func:`labels_by_query`).
            headers: extra headers for every request.

        Returns:
            The events posted (impressions and clicks), in order.

        Raises:
            httpx.HTTPStatusError: the service refused a request.
        """
        owned = isinstance(client, str)
        http: httpx.Client = (
            require("httpx", "serve").Client(base_url=client, timeout=30.0)
            if isinstance(client, str)
            else client
        )
        posted: list[dict[str, Any]] = []
        try:
            for query in queries:
                posted.extend(self._one_session(http, query, labels.get(query.id, {}), headers))
        finally:
            if owned:
                http.close()
        logger.info("simulated %d sessions, %d events", len(queries), len(posted))
        return posted

    def _one_session(
        self,
        http: httpx.Client,
        query: Query,
        labels: Mapping[str, str],
        headers: Mapping[str, str] | None,
    ) -> list[dict[str, Any]]:
        response = http.get(
            "/search", params={"q": query.text, "k": self.model.top_n}, headers=headers
        )
        response.raise_for_status()
        ranked = [result["product_id"] for result in response.json()["results"]]
        session = simulate_session(ranked, labels, self.rng, self.model)
        self._sessions += 1
        session_id = f"sim-{self.rng.integers(2**62):016x}"
        common = {"query": query.text, "query_id": query.id, "session_id": session_id}
        common["user_id"] = f"sim-user-{self._sessions}"
        events: list[dict[str, Any]] = [
            {"event": "impression", "product_id": pid, "position": position, **common}
            for position, pid in enumerate(session.shown, start=1)
        ]
        events += [
            {"event": "click", "product_id": session.shown[position - 1], "position": position}
            | common
            for position in session.clicked
        ]
        if events:
            posted = http.post(
                "/feedback",
                json={"events": events},
                headers={**(headers or {}), "Idempotency-Key": session_id},
            )
            posted.raise_for_status()
        return events
