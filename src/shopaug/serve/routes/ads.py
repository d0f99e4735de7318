"""``POST /ads/rank`` and ``POST /ads/click``: ad candidates ranked by calibrated CTR, with the
impressions and clicks written to the feedback store.

The ad model is the ``model/`` folder of a ``shopaug run ctr-...`` run (a
:class:`~shopaug.models.ctr.CtrModel` and its ``items.json``), found at ``Settings.ads_model_dir``
(default ``RUN_DIR/ads``; :meth:`Settings.for_run_dir` reads ``$SHOPAUG_ADS_MODEL_DIR``); it is
loaded on the first ad request. Without one the
routes answer 404 (ads are disabled), as the admin routes do without a token. Tests replace
:func:`get_ad_ranker` through ``app.dependency_overrides``.

Every ranked ad is logged as an ``impression`` event (``product_id`` ``ad:<campaign>:<item>``,
``query_id`` ``ads/<campaign>``, ``position`` its slot, ``propensity`` below), in the same store
and through the same public API as search feedback, so the online loop and the off-policy
estimators read them (:func:`shopaug.eval.logged_feedback.logged_rounds` turns the stored
impressions and clicks into the rounds of :mod:`shopaug.eval.off_policy`). The writes follow the
rules of ``/feedback``: through the bounded write queue, in a worker thread, and 503 (queue
full, store down) or 507 (store full) with ``Retry-After`` when nothing could be written; a
ranking whose impressions could not be logged is not answered, since an ad shown without its
logged propensity could never be evaluated.

The serving policy and its propensities (the probability that the policy shows this ad in this
slot for this context, what inverse propensity scoring divides by):

* ``epsilon = 0`` (the default): the candidates by calibrated CTR, best first, a deterministic
  ranking: each shown ad has propensity 1 for its slot.
* ``epsilon > 0``: epsilon-greedy over slates. With probability ``1 - epsilon`` the slate is
  that ranking, with probability ``epsilon`` it is the first ``k`` of a uniformly random order
  of the ``n`` candidates, so the propensity of ad ``a`` in slot ``j`` is
  ``(1 - epsilon) * [a is the ranking's j-th] + epsilon / n`` (exact, the slot's marginal, as
  the Open Bandit Dataset's propensities are). The draw comes from :func:`get_ad_rng` (fresh
  OS entropy per request; tests override it with a seeded generator).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Annotated, Any

import anyio
import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from shopaug.feedback.store import (
    Acknowledgement,
    FeedbackEvent,
    FeedbackStore,
    StoreFull,
    StoreUnavailable,
)
from shopaug.serve.deps import RuntimeDep, ServiceSettings, Store, Writes, invalid, retry_later
from shopaug.serve.schemas import error_responses
from shopaug.serve.settings import ADS_MODEL_ENV, Settings
from shopaug.serve.write_queue import WriteQueue, WriteQueueFull

logger = logging.getLogger(__name__)

router = APIRouter(tags=["ads"])

USER_FEATURES = ("user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3")
_LOCK = threading.Lock()


class AdRanker:
    """A CTR model and the items of each campaign it may show."""

    def __init__(self, model: Any, items: dict[str, list[dict[str, Any]]], version: str) -> None:
        self.model = model
        self.items = items
        self.version = version

    @classmethod
    def load(cls, directory: Path) -> AdRanker:
        import json

        from shopaug.models.ctr import CtrModel

        model = CtrModel.load(directory)
        items = json.loads((directory / "items.json").read_text("utf-8"))
        return cls(model, items, f"ctr@{directory.resolve().name}")

    def score(
        self, campaign: str, user: dict[str, str], affinity: dict[int, float], item_ids: list[int]
    ) -> np.ndarray:
        """Calibrated CTR of each item at the serving slot, ``(len(item_ids),)``."""
        from shopaug.models.ctr import SERVING_POSITION

        by_id = {int(row["item_id"]): row for row in self.items[campaign]}
        rows = pd.DataFrame([by_id[item] for item in item_ids])
        total = float(sum(affinity.values()))
        table = rows.assign(
            **user,
            affinity=[float(affinity.get(item, 0.0)) for item in item_ids],
            affinity_total=total,
        )
        return np.asarray(self.model.predict(table, position=SERVING_POSITION), dtype=float)


def get_ad_ranker(request: Request, runtime: RuntimeDep) -> AdRanker:
    """The ad model of the app (loaded once); 404 when the service has none."""
    ranker: AdRanker | None = getattr(request.app.state, "ad_ranker", None)
    if ranker is not None:
        return ranker
    directory = runtime.settings.ads_model_path
    if not (directory / "ctr-model.json").exists():  # like admin routes without a token
        raise HTTPException(
            status_code=404,
            detail=f"ads are disabled: no ad model at {directory} (put a CTR run's model/ "
            f"there or set {ADS_MODEL_ENV})",
        )
    with _LOCK:
        ranker = getattr(request.app.state, "ad_ranker", None)
        if ranker is None:
            ranker = AdRanker.load(directory)
            request.app.state.ad_ranker = ranker
            logger.info("ad model %s loaded from %s", ranker.version, directory)
    return ranker


AdModel = Annotated[AdRanker, Depends(get_ad_ranker)]


class AdRankRequest(BaseModel):
    """A context to fill ``k`` ad slots for."""

    model_config = ConfigDict(extra="forbid")

    campaign: str = Field(min_length=1, max_length=40)
    user_features: dict[str, str] = Field(
        description="user_feature_0..3, the hashed user features of the Open Bandit logs"
    )
    affinity: dict[int, float] = Field(
        default_factory=dict, description="item id -> the user's affinity to it (0 if absent)"
    )
    candidates: list[int] | None = Field(
        default=None, max_length=1000, description="item ids to rank; default every item"
    )
    k: int = Field(default=3, ge=1, le=100)
    user_id: str | None = Field(default=None, max_length=200)
    session_id: str | None = Field(
        default=None,
        max_length=200,
        description="logged with the impressions; clicks with the same session are matched to "
        "them for off-policy evaluation",
    )
    log_impressions: bool = True
    epsilon: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="exploration: with this probability the slate is a uniformly random order "
        "of the candidates instead of the CTR ranking (0: deterministic, propensity 1)",
    )


class RankedAd(BaseModel):
    item_id: int
    position: int
    ctr: float = Field(description="calibrated click probability at the first slot")
    propensity: float = Field(
        description="probability that the serving policy shows this ad in this slot for this "
        "context (1 for the deterministic ranking); logged with the impression"
    )


class AdRankResponse(BaseModel):
    model_version: str
    campaign: str
    ads: list[RankedAd]
    impression_ids: list[int]


class AdClick(BaseModel):
    """A click on an ad shown by ``/ads/rank``."""

    model_config = ConfigDict(extra="forbid")

    campaign: str = Field(min_length=1, max_length=40)
    item_id: int
    position: int = Field(ge=1)
    user_id: str | None = Field(default=None, max_length=200)
    session_id: str | None = Field(default=None, max_length=200)


def ad_product_id(campaign: str, item_id: int) -> str:
    return f"ad:{campaign}:{item_id}"


def get_ad_rng() -> np.random.Generator:
    """The generator of one request's exploration draw (fresh OS entropy; tests override it)."""
    return np.random.default_rng()


AdRng = Annotated[np.random.Generator, Depends(get_ad_rng)]


def explore_slate(
    ranking: np.ndarray, k: int, epsilon: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Epsilon-greedy over slates: the shown indices ``(k',)`` and each one's propensity.

    Args:
        ranking: ``(n,)`` candidate indices, best first (the greedy slate is its first ``k``).
        k: slots to fill (``k' = min(k, n)``).
        epsilon: probability of a uniformly random slate instead of the greedy one.
        rng: where the draws come from (none is made when ``epsilon`` is 0).

    Returns:
        ``(shown, propensity)``: propensity ``j`` is the marginal probability that the policy
        puts ``shown[j]`` in slot ``j``: ``(1 - epsilon) * [shown[j] == ranking[j]] +
        epsilon / n``.

    Example:
        >>> shown, p = explore_slate(np.array([2, 0, 1]), 2, 0.0, np.random.default_rng(0))
        >>> shown.tolist(), p.tolist()
        ([2, 0], [1.0, 1.0])
    """
    n = len(ranking)
    slots = min(k, n)
    greedy = ranking[:slots]
    shown = greedy
    if epsilon > 0 and rng.random() < epsilon:
        shown = rng.permutation(n)[:slots]
    propensity = (1.0 - epsilon) * (shown == greedy) + epsilon / n
    return shown, propensity


def _check_context(request: AdRankRequest, ranker: AdRanker) -> list[int]:
    if request.campaign not in ranker.items:
        raise invalid(
            ["body", "campaign"],
            f"unknown campaign {request.campaign!r}; expected one of {', '.join(ranker.items)}",
        )
    missing = [name for name in USER_FEATURES if name not in request.user_features]
    extra = sorted(set(request.user_features) - set(USER_FEATURES))
    if missing or extra:
        raise invalid(
            ["body", "user_features"],
            f"expected exactly the keys {', '.join(USER_FEATURES)}; missing {missing}, "
            f"unknown {extra}",
        )
    known = [int(row["item_id"]) for row in ranker.items[request.campaign]]
    candidates = known if request.candidates is None else request.candidates
    unknown = sorted(set(candidates) - set(known))
    if unknown or not candidates:
        raise invalid(
            ["body", "candidates"],
            f"expected item ids of campaign {request.campaign!r} (0..{len(known) - 1}); "
            f"unknown {unknown[:20]}",
        )
    return list(dict.fromkeys(candidates))


async def record(
    events: list[FeedbackEvent], store: FeedbackStore, writes: WriteQueue, settings: Settings
) -> Acknowledgement:
    """Write ``events`` as ``/feedback`` does: a slot of the bounded write queue, the store in
    a worker thread; 503/507 with ``Retry-After`` when nothing was written."""
    try:
        async with writes.slot():
            return await anyio.to_thread.run_sync(store.record, events)
    except WriteQueueFull as error:
        raise retry_later(503, f"{error}; retry later", settings) from error
    except StoreFull as error:
        raise retry_later(507, f"{error}; nothing was written, retry later", settings) from error
    except StoreUnavailable as error:
        raise retry_later(503, f"{error}; nothing was written, retry later", settings) from error


@router.post(
    "/ads/rank", response_model=AdRankResponse, responses=error_responses(400, 404, 413, 503, 507)
)
async def rank_ads(
    request: AdRankRequest,
    ranker: AdModel,
    store: Store,
    rng: AdRng,
    writes: Writes,
    settings: ServiceSettings,
) -> AdRankResponse:
    """Rank the candidates by calibrated CTR (or explore, ``epsilon``), fill ``k`` slots, log
    the impressions with their propensities."""
    candidates = _check_context(request, ranker)
    ctr = await anyio.to_thread.run_sync(
        ranker.score, request.campaign, request.user_features, request.affinity, candidates
    )
    shown, propensity = explore_slate(
        np.argsort(-ctr, kind="stable"), request.k, request.epsilon, rng
    )
    ads = [
        RankedAd(
            item_id=candidates[index],
            position=slot,
            ctr=float(ctr[index]),
            propensity=float(probability),
        )
        for slot, (index, probability) in enumerate(zip(shown, propensity), start=1)
    ]
    ids: list[int] = []
    if request.log_impressions and ads:
        events = [
            FeedbackEvent(
                "impression",
                ad_product_id(request.campaign, ad.item_id),
                query_id=f"ads/{request.campaign}",
                position=ad.position,
                user_id=request.user_id,
                session_id=request.session_id,
                propensity=ad.propensity,
            )
            for ad in ads
        ]
        ids = list((await record(events, store, writes, settings)).event_ids)
    return AdRankResponse(
        model_version=ranker.version, campaign=request.campaign, ads=ads, impression_ids=ids
    )


@router.post("/ads/click", responses=error_responses(400, 404, 413, 503, 507))
async def click_ad(
    click: AdClick, ranker: AdModel, store: Store, writes: Writes, settings: ServiceSettings
) -> dict[str, Any]:
    """Log a click on an ad (same store and event schema as ``/feedback``)."""
    items = ranker.items.get(click.campaign)
    if items is None or not 0 <= click.item_id < len(items):
        raise invalid(["body"], f"unknown ad {click.campaign!r}/{click.item_id}")
    event = FeedbackEvent(
        "click",
        ad_product_id(click.campaign, click.item_id),
        query_id=f"ads/{click.campaign}",
        position=click.position,
        user_id=click.user_id,
        session_id=click.session_id,
    )
    acknowledgement = await record([event], store, writes, settings)
    return {"accepted": acknowledgement.accepted, "event_ids": list(acknowledgement.event_ids)}
