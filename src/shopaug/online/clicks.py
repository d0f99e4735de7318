"""Logged impressions and clicks -> training samples, corrected for position bias.

Users click what they look at, and they look at the top of a list more than at the bottom, so
a click says "relevant AND examined". Two standard corrections are applied:

* **Skip-above negatives** (Joachims et al., 2005): in one result page, an item shown above
  the lowest click and not clicked was (under the cascade assumption) examined and passed
  over, so it is a negative. Items below the lowest click say nothing and are not used.
* **Inverse propensity weights** (Joachims, Swaminathan & Schnabel, 2017): a click at position
  ``k`` is weighted ``1 / propensity(k)`` (clipped at ``max_weight``), where ``propensity(k)`` is
  the probability that position ``k`` is examined. This makes the weighted clicks an unbiased
  estimate of relevance under the position-based model. Skip-above negatives get weight 1:
  the cascade assumption that makes them negatives also says they were examined.

:class:`PositionBiasModel` holds the propensities (position 1 = 1.0, they are relative). Three
ways to get them:

* :meth:`PositionBiasModel.power_law`: ``1 / k**eta`` (default ``eta=1``), the usual prior.
* :meth:`PositionBiasModel.estimate_ratio`: click-through rate at ``k`` divided by that at 1.
  Unbiased only when what is shown at each position does not depend on relevance (randomised
  or swapped result lists); on a normal ranking it overstates the decline, because better
  items sit higher.
* :meth:`PositionBiasModel.estimate_em`: expectation-maximisation for the position-based click
  model ``P(click) = propensity(k) * relevance(query, product)``, the EM of Wang et al. (2018,
  "Position bias estimation for unbiased learning to rank in personal search") with one
  relevance value per (query, product) instead of a regression. It needs the same pair to be
  shown at several positions (result lists that change over time or between users).

Every log ``/feedback`` accepts goes through :func:`feedback_samples`: events that cannot give
a sample (no query, an impression without position, a page where nothing was clicked, ...) are
counted by reason and logged, never a traceback. Why one module of this length: the position
model, the result pages and the skip reasons share one notion of a result page.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shopaug.augment.samples import SAMPLE_COLUMNS

logger = logging.getLogger(__name__)

#: Events that mean the user chose the product (a cart or a purchase implies a click).
CLICK_EVENTS = ("click", "add_to_cart", "purchase")
#: Columns of :func:`result_pages`.
PAGE_COLUMNS = ("page", "query_id", "query", "product_id", "position", "clicked")
METHOD = "feedback"
SOURCE = "clicks"
#: ``seed`` value of feedback samples: they come from logs, not from a random draw.
NO_SEED = -1


@dataclass(frozen=True)
class PositionBiasModel:
    """Examination propensities by position.

    Args:
        propensities: ``propensities[k - 1]`` is the relative probability that position ``k``
            is examined (position 1 = 1.0). Positions past the end use the last value.
    """

    propensities: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.propensities:
            raise ValueError("propensities is empty; expected one value per position")
        for position, value in enumerate(self.propensities, start=1):
            if not (0.0 < value <= 1.0) or not np.isfinite(value):
                raise ValueError(
                    f"propensity of position {position} is {value}; expected a number in (0, 1]"
                )

    @classmethod
    def power_law(cls, eta: float = 1.0, max_position: int = 100) -> PositionBiasModel:
        """``propensity(k) = 1 / k**eta`` for ``k = 1..max_position``."""
        if eta < 0:
            raise ValueError(f"eta is {eta}; expected 0 or more")
        positions = np.arange(1, max_position + 1, dtype=np.float64)
        return cls(tuple(float(v) for v in positions**-eta))

    @classmethod
    def estimate_ratio(cls, pages: pd.DataFrame, max_position: int = 10) -> PositionBiasModel:
        """Click-through rate at each position relative to position 1 (see module docstring).

        Args:
            pages: rows of :func:`result_pages` (``position`` and ``clicked`` are used).
            max_position: positions estimated; positions without impressions use the previous one.
        """
        counts = _position_counts(pages, max_position)
        shown, clicks = counts["shown"].to_numpy(), counts["clicks"].to_numpy()
        if shown[0] == 0 or clicks[0] == 0:
            raise ValueError("no clicks at position 1; the ratio estimator needs some")
        rates = np.divide(clicks, shown, out=np.full(max_position, np.nan), where=shown > 0)
        return cls(_fill_and_normalise(rates))

    @classmethod
    def estimate_em(
        cls,
        pages: pd.DataFrame,
        max_position: int = 10,
        *,
        iterations: int = 200,
        tolerance: float = 1e-7,
    ) -> PositionBiasModel:
        """EM for the position-based model (see module docstring).

        Args:
            pages: rows of :func:`result_pages`; impressions below ``max_position`` are ignored.
            max_position: positions estimated.
            iterations: most EM steps.
            tolerance: stop when no propensity moves more than this.
        """
        frame = pages[pages["position"] <= max_position]
        if frame.empty:
            raise ValueError(f"no impressions at positions 1..{max_position}")
        cells = (
            frame.assign(pair=frame["query_id"].astype(str) + "\x1f" + frame["product_id"])
            .groupby(["pair", "position"], sort=True)["clicked"]
            .agg(["size", "sum"])
            .reset_index()
        )
        pair_index, pairs = pd.factorize(cells["pair"], sort=True)
        position_index = cells["position"].to_numpy(dtype=np.int64) - 1
        shown = cells["size"].to_numpy(dtype=np.float64)
        clicks = cells["sum"].to_numpy(dtype=np.float64)
        not_clicked = shown - clicks
        theta = np.asarray(cls.power_law(1.0, max_position).propensities)
        gamma = np.full(len(pairs), 0.5)
        shown_per_position = np.bincount(position_index, weights=shown, minlength=max_position)
        shown_per_pair = np.bincount(pair_index, weights=shown, minlength=len(pairs))
        eps = 1e-6
        for step in range(iterations):
            t, g = theta[position_index], gamma[pair_index]
            denominator = np.maximum(1.0 - t * g, eps)
            examined_not_relevant = t * (1.0 - g) / denominator  # P(E=1, R=0 | no click)
            relevant_not_examined = (1.0 - t) * g / denominator  # P(E=0, R=1 | no click)
            new_theta = np.bincount(
                position_index,
                weights=clicks + not_clicked * examined_not_relevant,
                minlength=max_position,
            ) / np.maximum(shown_per_position, eps)
            new_theta = np.where(shown_per_position > 0, new_theta, theta)
            gamma = np.bincount(
                pair_index, weights=clicks + not_clicked * relevant_not_examined
            ) / np.maximum(shown_per_pair, eps)
            gamma = np.clip(gamma, eps, 1.0 - eps)
            new_theta = np.clip(new_theta, eps, 1.0)
            change = float(np.max(np.abs(new_theta - theta)))
            theta = new_theta
            if change < tolerance:
                logger.debug("position EM converged after %d steps", step + 1)
                break
        theta = np.where(shown_per_position > 0, theta, np.nan)
        return cls(_fill_and_normalise(theta))

    def propensity(self, position: int) -> float:
        """Relative examination probability of a 1-based ``position``."""
        if position < 1:
            raise ValueError(f"position is {position}; expected 1 or more")
        return self.propensities[min(position, len(self.propensities)) - 1]

    def weight(self, position: int, max_weight: float = 10.0) -> float:
        """``min(1 / propensity(position), max_weight)``."""
        return min(1.0 / self.propensity(position), max_weight)


def query_key(query: str) -> str:
    """A stable query id for a query text logged without one (case and spaces folded)."""
    normalised = " ".join(query.lower().split())
    return "q-" + hashlib.sha1(normalised.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class FeedbackSamples:
    """Samples made from a feedback log, and the events that could not be used.

    Attributes:
        samples: see :func:`click_samples`.
        skipped: reason -> number of events skipped for it (see :data:`SKIP_REASONS`).
    """

    samples: pd.DataFrame
    skipped: dict[str, int]

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())


#: Why an event gives no sample; each skipped event is counted under one of these.
SKIP_REASONS = {
    "unknown_event": "not an impression, click, add_to_cart or purchase",
    "no_product": "no product id",
    "no_query": "neither query text nor a query id with text elsewhere in the log",
    "bad_position": "position is not a whole number of 1 or more",
    "unplaced_impression": "impression without a position",
    "page_without_click": "impression on a result page where nothing was clicked",
}


def _text(column: pd.Series) -> pd.Series:
    """A column as stripped strings, missing values as ''."""
    return column.astype(object).where(column.notna(), "").astype(str).str.strip()


def _positions(column: pd.Series) -> pd.Series:
    """Positions as floats: NaN where missing; -1 where not a whole number of 1 or more."""
    numbers = pd.to_numeric(column.astype(object), errors="coerce").astype("float64")
    bad = column.notna() & (numbers.isna() | (numbers < 1) | (numbers % 1 != 0))
    return numbers.mask(bad, -1.0)


def _clean_events(events: pd.DataFrame, skipped: dict[str, int]) -> pd.DataFrame:
    """The usable events with text columns, a query id and a page key; counts the rest."""
    frame = events.copy()
    for column in ("query", "query_id", "user_id", "session_id"):
        frame[column] = _text(frame[column]) if column in frame.columns else ""
    frame["event"] = _text(frame["event"])
    frame["product_id"] = _text(frame["product_id"])
    frame["position"] = _positions(frame["position"])
    # A query id logged with text on one event gives its text to the others.
    known = frame[(frame["query_id"] != "") & (frame["query"] != "")]
    text_of_id = dict(zip(known["query_id"], known["query"], strict=True))
    missing_text = (frame["query"] == "") & (frame["query_id"] != "")
    frame.loc[missing_text, "query"] = frame.loc[missing_text, "query_id"].map(
        lambda qid: text_of_id.get(qid, "")
    )
    checks = [
        ("unknown_event", ~frame["event"].isin(("impression", *CLICK_EVENTS))),
        ("no_product", frame["product_id"] == ""),
        ("no_query", frame["query"] == ""),
        ("bad_position", frame["position"] == -1.0),
        ("unplaced_impression", (frame["event"] == "impression") & frame["position"].isna()),
    ]
    keep = pd.Series(True, index=frame.index)
    for reason, mask in checks:
        counted = int((mask & keep).sum())
        if counted:
            skipped[reason] = skipped.get(reason, 0) + counted
        keep &= ~mask
    frame = frame[keep]
    frame["query_id"] = frame["query_id"].where(
        frame["query_id"] != "", frame["query"].map(query_key)
    )
    frame["page"] = frame["user_id"] + "\x1f" + frame["session_id"] + "\x1f" + frame["query_id"]
    return frame


def _result_pages(events: pd.DataFrame, skipped: dict[str, int]) -> pd.DataFrame:
    missing = [c for c in ("event", "product_id", "position", "query") if c not in events.columns]
    if missing:
        raise ValueError(f"events frame lacks columns {missing}")
    frame = _clean_events(events, skipped)
    impressions = frame[frame["event"] == "impression"]
    shown = (
        impressions.assign(position=impressions["position"].astype(np.int64))
        .sort_values(["page", "position"], kind="stable")
        .drop_duplicates(["page", "product_id"], keep="first")
    )
    clicked = frame[frame["event"].isin(CLICK_EVENTS)].drop_duplicates(["page", "product_id"])
    shown_keys = set(zip(shown["page"], shown["product_id"], strict=True))
    clicked_keys = set(zip(clicked["page"], clicked["product_id"], strict=True))
    shown = shown.assign(
        clicked=[
            (page, pid) in clicked_keys
            for page, pid in zip(shown["page"], shown["product_id"], strict=True)
        ]
    )
    orphan_mask = np.array(
        [
            (page, pid) not in shown_keys
            for page, pid in zip(clicked["page"], clicked["product_id"], strict=True)
        ],
        dtype=bool,
    )
    orphan = clicked.loc[orphan_mask]
    orphan = orphan.assign(position=orphan["position"].fillna(1).astype(np.int64), clicked=True)
    pages = pd.concat([shown, orphan], ignore_index=True)[list(PAGE_COLUMNS)]
    # With no impressions the concatenation loses the column types (the KeyError of issue 13).
    pages = pages.astype({"position": np.int64, "clicked": bool})
    pages_with_click = set(pages.loc[pages["clicked"], "page"])
    idle = int((~impressions["page"].isin(pages_with_click)).sum())
    if idle:
        skipped["page_without_click"] = skipped.get("page_without_click", 0) + idle
    return pages.sort_values(["page", "position", "product_id"], kind="stable").reset_index(
        drop=True
    )


def result_pages(events: pd.DataFrame) -> pd.DataFrame:
    """One row per (result page, shown product): its position and whether it was clicked.

    A result page is the (user_id, session_id, query) triple; the query is ``query_id`` when
    logged, else the query text. A click whose product has no impression on the page is kept
    at its own logged position (position 1 if it has none, so it gets weight 1). Events that
    cannot be placed (see :data:`SKIP_REASONS`) are left out; :func:`feedback_samples` counts
    them.

    Args:
        events: columns ``event, product_id, position, query`` and optionally ``query_id,
            user_id, session_id`` (e.g. :func:`shopaug.feedback.store.events_frame`).

    Returns:
        DataFrame with :data:`PAGE_COLUMNS` (``position`` int64, ``clicked`` bool), sorted by
        page then position.
    """
    return _result_pages(events, {})


def feedback_samples(
    events: pd.DataFrame,
    position_model: PositionBiasModel | None = None,
    *,
    max_weight: float = 10.0,
) -> FeedbackSamples:
    """:func:`click_samples` plus the count of events skipped, by reason (logged).

    Every log the service accepts goes through: clicks without impressions (positives at
    their own position, no negatives), impressions without clicks (nothing, counted), events
    with no query (counted), one event per session, the same position twice.
    """
    if max_weight < 1.0:
        raise ValueError(f"max_weight is {max_weight}; expected 1 or more")
    model = position_model or PositionBiasModel.power_law(1.0)
    skipped: dict[str, int] = {}
    pages = _result_pages(events, skipped)
    for reason, count in sorted(skipped.items()):
        logger.info("%d of %d events give no sample: %s", count, len(events), SKIP_REASONS[reason])
    rows: list[dict[str, object]] = []
    for _, page in pages.groupby("page", sort=True):
        clicked = page[page["clicked"]]
        if clicked.empty:
            continue
        lowest_click = int(clicked["position"].max())
        for row in clicked.itertuples(index=False):
            position = int(row.position)  # type: ignore[arg-type]
            rows.append(_row(row, 1, model.weight(position, max_weight)))
        skipped_above = page[(~page["clicked"]) & (page["position"] < lowest_click)]
        for row in skipped_above.itertuples(index=False):
            rows.append(_row(row, 0, 1.0))
    columns = [*SAMPLE_COLUMNS, "weight"]
    if not rows:
        return FeedbackSamples(_typed(pd.DataFrame(columns=columns)), skipped)
    frame = pd.DataFrame(rows)
    merged = (
        frame.groupby(["query_id", "product_id", "label"], sort=False)
        .agg(query=("query", "first"), rank=("rank", "min"), weight=("weight", "sum"))
        .reset_index()
    )
    merged["kind"] = np.where(merged["label"] == 1, "positive", "negative")
    merged["method"] = METHOD
    merged["source"] = SOURCE
    merged["seed"] = NO_SEED
    merged["score"] = np.nan
    merged = merged.sort_values(
        ["query_id", "label", "rank", "product_id"], ascending=[True, False, True, True]
    )
    return FeedbackSamples(_typed(merged[columns].reset_index(drop=True)), skipped)


def click_samples(
    events: pd.DataFrame,
    position_model: PositionBiasModel | None = None,
    *,
    max_weight: float = 10.0,
) -> pd.DataFrame:
    """Training samples from logged events: clicks positive, skip-above negatives, IPW weights.

    Rows of the same (query, product, label) are merged: ``weight`` is the sum of their
    weights and ``rank`` the best position they were shown at. Events that give no sample
    are counted and logged (:func:`feedback_samples` returns the counts).

    Args:
        events: logged events (see :func:`result_pages`).
        position_model: examination propensities; default ``PositionBiasModel.power_law(1.0)``.
        max_weight: clip of ``1 / propensity``.

    Returns:
        DataFrame with the samples.parquet columns (``method="feedback"``, ``source="clicks"``,
        ``score`` NaN, ``seed`` -1) plus ``weight`` (float64), sorted by query id, label
        (positives first), rank and product id.
    """
    return feedback_samples(events, position_model, max_weight=max_weight).samples


def _row(row: object, label: int, weight: float) -> dict[str, object]:
    return {
        "query_id": row.query_id,  # type: ignore[attr-defined]
        "query": row.query,  # type: ignore[attr-defined]
        "product_id": row.product_id,  # type: ignore[attr-defined]
        "label": label,
        "rank": int(row.position),  # type: ignore[attr-defined]
        "weight": weight,
    }


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """The column types of samples.parquet (strings as Python objects) plus float weights."""
    types: dict[str, str | type] = {
        column: object for column in ("query_id", "query", "product_id", "kind", "method", "source")
    }
    types.update(label="int8", seed="int64", score="float64", rank="int32", weight="float64")
    return frame.astype(types)


def _position_counts(pages: pd.DataFrame, max_position: int) -> pd.DataFrame:
    frame = pages[pages["position"] <= max_position]
    grouped = frame.groupby("position")["clicked"]
    counts = pd.DataFrame({"shown": grouped.size(), "clicks": grouped.sum()})
    return counts.reindex(range(1, max_position + 1), fill_value=0)


def _fill_and_normalise(values: np.ndarray) -> tuple[float, ...]:
    """Forward-fill NaN positions, make position 1 equal 1, keep every value in (0, 1]."""
    values = np.asarray(values, dtype=np.float64).copy()
    if not np.isfinite(values[0]) or values[0] <= 0:
        raise ValueError("position 1 has no estimate; it needs impressions and clicks")
    for index in range(1, len(values)):
        if not np.isfinite(values[index]):
            values[index] = values[index - 1]
    values = np.clip(values / values[0], 1e-6, 1.0)
    return tuple(float(v) for v in values)
