"""The closed loop, simulated: the real service, simulated users, an online round after each
round of feedback (what ``shopaug simulate`` runs).

Queries are split once, seeded, within the run's first test fold (the queries the served
model was not trained on), keeping those with at least one relevant product:

* **feedback queries** (``feedback_fraction`` of them): the simulated users issue these
  (``queries_per_round`` drawn per round), read the served result lists and click by the
  human labels with position bias (:class:`~shopaug.simulate.users.ClickSimulator`);
* **held-out queries** (the rest, minus any query already in the feedback log): never issued,
  so never trained on. They are split once more
  (:func:`~shopaug.online.retrain.is_gate_query`): the online round's gate compares champion
  and challenger on its half only, and the NDCG@10 of each round is measured on the other
  half (``held_out_queries`` in ``simulation.json``) through the running service's
  ``GET /search``: the quality of the model actually served, on queries no promotion was
  selected on.

The service runs in a background thread of this process (uvicorn on 127.0.0.1, a free port by
default); after a promotion the round calls its ``/admin/reload`` with an admin token (from
``$SHOPAUG_ADMIN_TOKEN``, or a random one made for the simulation).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shopaug.data import Dataset
from shopaug.errors import ConfigError, require
from shopaug.eval.metrics import evaluate_run
from shopaug.feedback.store import FeedbackStore
from shopaug.online.clicks import query_key
from shopaug.online.retrain import (
    METRIC,
    OnlineConfig,
    RoundReport,
    feedback_database_url,
    gate_queries,
    logged_query_keys,
    report_queries,
    run_online_round,
)
from shopaug.retrieval.catalog import CatalogSource
from shopaug.serve.catalog_backend import make_catalog_loader
from shopaug.serve.settings import ADMIN_TOKEN_ENV, Settings
from shopaug.simulate.users import ClickModel, ClickSimulator, labels_by_query

logger = logging.getLogger(__name__)

SIMULATION_FILE = "simulation.json"
#: How long the service may take to load its model and catalog (minutes on a loaded machine:
#: the first start encodes the catalog).
STARTUP_SECONDS = 300.0


@dataclass(frozen=True)
class SimulationConfig:
    """Settings of :func:`simulate`.

    Attributes:
        rounds: rounds of feedback, each followed by an online round.
        queries_per_round: simulated sessions per round (one query each).
        feedback_fraction: share of the test fold's queries the users issue.
        seed: seeds the query split, the draws and the users.
        online: settings of every online round.
        click_model: the simulated users.
    """

    rounds: int = 3
    queries_per_round: int = 50
    feedback_fraction: float = 0.5
    seed: int = 0
    online: OnlineConfig = field(default_factory=OnlineConfig)
    click_model: ClickModel = field(default_factory=ClickModel)

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"simulation: rounds is {self.rounds}; expected 1 or more")
        if self.queries_per_round < 1:
            raise ConfigError(
                f"simulation: queries_per_round is {self.queries_per_round}; expected 1 or more"
            )
        if not 0 < self.feedback_fraction < 1:
            raise ConfigError(
                f"simulation: feedback_fraction is {self.feedback_fraction}; expected (0, 1)"
            )


@dataclass
class RoundResult:
    """One simulated round: the feedback it logged, the gate's decision and the served NDCG."""

    round: int
    sessions: int
    events: int
    clicks: int
    decision: str
    reason: str
    champion_ndcg: float | None
    challenger_ndcg: float | None
    served_ndcg: float
    served_version: str
    seconds: float


@contextmanager
def running_service(
    run_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    admin_token: str | None = None,
    cache_dir: str | Path | None = None,
) -> Iterator[str]:
    """Serve ``run_dir`` with uvicorn in a background thread; yield its base URL.

    ``port=0`` picks a free port. The service is stopped when the block exits.

    Raises:
        RuntimeError: the service did not start within :data:`STARTUP_SECONDS`.
    """
    uvicorn = require("uvicorn", "serve")
    from shopaug.serve import create_app

    settings = Settings.for_run_dir(run_dir, admin_token=admin_token)
    app = create_app(settings, make_catalog_loader(run_dir, cache_dir=cache_dir))
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="shopaug-service", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the service for {run_dir} did not start on {host}:{port}")
        time.sleep(0.05)
    bound = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://{host}:{bound}"
    logger.info("service for %s on %s", run_dir, url)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def split_queries(
    run_dir: str | Path, dataset: Dataset, fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """(feedback queries, held-out queries) of the run's first test fold (module docstring)."""
    test = CatalogSource.from_run_dir(run_dir).test_fold(dataset)
    positives = dataset.positives(query_ids=test)
    judged = sorted(q for q in test if positives.get(q))
    if len(judged) < 2:
        raise ConfigError(f"the first test fold of {run_dir} has {len(judged)} judged queries")
    order = np.random.default_rng(seed).permutation(len(judged))
    cut = min(len(judged) - 1, max(1, round(len(judged) * fraction)))
    feedback = sorted(judged[i] for i in order[:cut])
    held = sorted(judged[i] for i in order[cut:])
    return feedback, held


def served_ndcg(
    base_url: str, dataset: Dataset, query_ids: Sequence[str]
) -> tuple[np.ndarray, str]:
    """Per-query NDCG@10 of what the service answers now, and the model version it reports."""
    httpx = require("httpx", "serve")
    run: dict[str, list[tuple[str, float]]] = {}
    version = ""
    with httpx.Client(base_url=base_url, timeout=60.0) as client:
        for qid in query_ids:
            response = client.get("/search", params={"q": dataset.query_by_id[qid].text, "k": 10})
            response.raise_for_status()
            payload = response.json()
            version = payload["model_version"]
            run[qid] = [(r["product_id"], float(r["score"])) for r in payload["results"]]
    qrels = dataset.qrels(query_ids=query_ids)
    values = evaluate_run(run, qrels, metrics=[METRIC], query_ids=list(query_ids))[METRIC]
    return values, version


def simulate(
    run_dir: str | Path,
    config: SimulationConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    cache_dir: str | Path | None = None,
    on_round: Callable[[RoundResult], None] | None = None,
) -> dict[str, Any]:
    """Run the simulated loop on ``run_dir`` and write ``RUN_DIR/simulation.json``.

    Args:
        run_dir: a run directory (config.yaml, model/ or current, folds.json).
        config: simulation settings.
        host: interface of the service (keep the loopback).
        port: its port; 0 picks a free one.
        cache_dir: embedding cache folder.
        on_round: called after every round (the CLI prints from it).

    Returns:
        The simulation.json payload: the query split, the NDCG@10 served before the first
        round and after each round (``ndcg_at_10``), and every round's decision.
    """
    config = config or SimulationConfig()
    run_dir = Path(run_dir)
    started = time.perf_counter()
    source = CatalogSource.from_run_dir(run_dir)
    dataset = source.load()
    feedback_ids, held_ids = split_queries(run_dir, dataset, config.feedback_fraction, config.seed)
    gate_ids = gate_queries(held_ids)
    held_ids = report_queries(held_ids)
    store = FeedbackStore(feedback_database_url(run_dir))
    try:
        logged = logged_query_keys(store)
    finally:
        store.close()
    held_ids = [
        q
        for q in held_ids
        if q not in logged and query_key(dataset.query_by_id[q].text) not in logged
    ]
    if not held_ids:
        raise ConfigError(
            f"every reported held-out query of {run_dir} is already in its feedback log"
        )
    token = os.environ.get(ADMIN_TOKEN_ENV) or secrets.token_urlsafe(24)
    labels = labels_by_query(dataset.judgments)
    users = ClickSimulator(config.click_model, seed=config.seed)
    rng = np.random.default_rng(config.seed + 7)
    results: list[RoundResult] = []
    with running_service(
        run_dir, host=host, port=port, admin_token=token, cache_dir=cache_dir
    ) as url:
        initial, initial_version = served_ndcg(url, dataset, held_ids)
        for number in range(1, config.rounds + 1):
            round_started = time.perf_counter()
            replace = config.queries_per_round > len(feedback_ids)
            picks = rng.choice(len(feedback_ids), size=config.queries_per_round, replace=replace)
            queries = [dataset.query_by_id[feedback_ids[int(i)]] for i in picks]
            events = users.run_round(url, queries, labels)
            report: RoundReport = run_online_round(
                run_dir,
                config.online,
                service_url=url,
                admin_token=token,
                cache_dir=cache_dir,
            )
            values, version = served_ndcg(url, dataset, held_ids)
            decision = (
                "promote"
                if report.promoted
                else ("keep" if report.challenger_dir else "no-training")
            )
            result = RoundResult(
                round=number,
                sessions=len(queries),
                events=len(events),
                clicks=sum(1 for e in events if e["event"] == "click"),
                decision=decision,
                reason=report.reason,
                champion_ndcg=report.champion_ndcg,
                challenger_ndcg=report.challenger_ndcg,
                served_ndcg=float(values.mean()),
                served_version=version,
                seconds=time.perf_counter() - round_started,
            )
            results.append(result)
            if on_round is not None:
                on_round(result)
    payload: dict[str, Any] = {
        "run_dir": str(run_dir),
        "dataset": dataset.name,
        "metric": METRIC,
        "feedback_queries": feedback_ids,
        "held_out_queries": held_ids,
        "gate_queries": gate_ids,
        "initial_ndcg_at_10": float(initial.mean()),
        "initial_version": initial_version,
        "ndcg_at_10": [r.served_ndcg for r in results],
        "decisions": [r.decision for r in results],
        "rounds": [asdict(r) for r in results],
        "config": {
            "rounds": config.rounds,
            "queries_per_round": config.queries_per_round,
            "feedback_fraction": config.feedback_fraction,
            "seed": config.seed,
            "online": asdict(config.online),
        },
        "seconds": time.perf_counter() - started,
    }
    (run_dir / SIMULATION_FILE).write_text(json.dumps(payload, indent=1) + "\n", "utf-8")
    return payload
