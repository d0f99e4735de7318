"""One round of the online loop: new feedback -> samples -> fine-tuned challenger -> gate.

:func:`run_online_round` does, in order:

1. **Read** the events the ``online`` consumer has not consumed (:func:`collect_feedback`) and
   turn them into samples: clicks are positives weighted ``1 / propensity(position)``
   (inverse propensity weights, clipped), products shown above the lowest click and not
   clicked are negatives (skip-above), as :func:`shopaug.online.clicks.click_samples` does.
2. **Augment** the same queries with mined negatives from the current model (the champion),
   by :func:`shopaug.augment.mining.mine_hard_negatives` with the clicks as the known
   positives: the champion's ranking of the catalog, ranks ``(mining_range_min,
   mining_range_max]`` counted without the clicked products (by default below the ten results
   users were shown, which they never examined), only candidates scoring clearly below the
   clicks (relative ``mining_margin`` under their mean cosine; 0 disables the filter), and
   ``mined_negatives_per_query`` of them drawn at random (seeded).
3. **Fine-tune** a copy of the champion for a few steps (:func:`shopaug.train.fit`; one
   training group per click, its weight the click's IPW weight) into
   ``RUN_DIR/online/round-NNNN/challenger``. The champion's directory is never written.
4. **Evaluate** champion and challenger per query (NDCG@10 over the whole catalog, ranked as
   the service ranks it: dense, BM25 fusion and reranker, :class:`RankingModel`) on the
   **gate queries**. The
   held-out queries are the judged queries of the run's first test fold (``folds.json``; the
   served model was trained on that fold's train queries) with at least one relevant
   product, minus every query that appears anywhere in the feedback log (by id or by text),
   so the gate never scores a query the challenger was trained on. They are split in two by
   a hash of the query id (:func:`is_gate_query`, stable as the log grows): the gate reads
   only its half; the other half (:func:`report_queries`) is never used for a decision, so
   a report of the served quality on it (``shopaug simulate``) is not the number the gate
   selected on.
5. **Gate** (:func:`gate_and_promote`): promote unless the challenger's mean is lower by more
   than ``tolerance``; promotion copies the challenger under ``RUN_DIR/models/`` and swaps the
   ``current`` pointer atomically (earlier models are kept), then asks a running service to
   ``POST /admin/reload`` when its URL and admin token are given.
6. **Mark** the events consumed (only now: a crash before this replays them next round) and
   write ``round.json`` beside the challenger.

Why one module of this length: one round of the loop in order (samples, mining, fine-tune,
gate, promotion), each step a short function over the same round state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shopaug.augment.mining import MiningConfig, mine_hard_negatives
from shopaug.data import Dataset
from shopaug.data.records import Judgment, Query
from shopaug.encoders.base import Encoder
from shopaug.encoders.bm25 import BM25Index
from shopaug.errors import ConfigError
from shopaug.eval.metrics import evaluate_run
from shopaug.feedback.store import FeedbackStore
from shopaug.models.model_dir import is_hashing_model, load_trainable
from shopaug.models.registry import CURRENT, resolve_model_dir
from shopaug.online.clicks import PositionBiasModel, query_key
from shopaug.online.gate import Decision
from shopaug.online.loop import collect_feedback, gate_and_promote
from shopaug.retrieval.catalog import CatalogSource, RunCatalog, load_model_catalog
from shopaug.retrieval.fusion import FUSION_FILE, FusionSpec, bm25_run, read_fusion
from shopaug.retrieval.ranking import CatalogRanker, Run
from shopaug.retrieval.reranking import FEATURES_ENCODER_DIR, RERANKER_DIR, FeatureReranker
from shopaug.retrieval.retrievers import BM25Retriever, DenseRetriever
from shopaug.train import TrainConfig, TrainingExample, fit

logger = logging.getLogger(__name__)

#: Cursor name of the online loop in the feedback store.
ONLINE_CONSUMER = "online"
#: Folder of the rounds inside a run directory.
ONLINE_DIR = "online"
FEEDBACK_DB = "feedback.sqlite"
METRIC = "ndcg@10"


@dataclass(frozen=True)
class OnlineConfig:
    """Settings of one online round (see the module docstring for each step).

    Attributes:
        tolerance: the gate's largest accepted loss of mean NDCG@10.
        steps: optimizer steps of the fine-tune.
        batch_size: training groups per step.
        lr: learning rate; None: 2e-5 for a sentence-transformers model, 5e-4 for a hashing one.
        negatives_per_example: negatives in each training group (besides in-batch ones).
        mined_negatives_per_query: mined negatives added per feedback query.
        mining_range_min: first champion rank (0-based) mined.
        mining_range_max: rank (exclusive) mined up to.
        mining_margin: a mined candidate must score below ``mean click score * (1 - margin)``.
        max_weight: clip of the inverse propensity weights.
        propensity_eta: exponent of the ``1/k**eta`` examination model behind the weights.
        seed: seeds the mining draws and the fine-tune.
    """

    tolerance: float = 0.005
    steps: int = 20
    batch_size: int = 16
    lr: float | None = None
    negatives_per_example: int = 3
    mined_negatives_per_query: int = 5
    mining_range_min: int = 10
    mining_range_max: int = 50
    mining_margin: float = 0.05
    max_weight: float = 10.0
    propensity_eta: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.tolerance >= 0, f"tolerance is {self.tolerance}; expected 0 or more"),
            (self.steps >= 1, f"steps is {self.steps}; expected 1 or more"),
            (self.batch_size >= 1, f"batch_size is {self.batch_size}; expected 1 or more"),
            (self.lr is None or self.lr > 0, f"lr is {self.lr}; expected a positive number"),
            (
                0 <= self.mining_range_min < self.mining_range_max,
                f"mining range [{self.mining_range_min}, {self.mining_range_max}) is empty",
            ),
            (self.mined_negatives_per_query >= 0, "mined_negatives_per_query must be >= 0"),
            (self.negatives_per_example >= 0, "negatives_per_example must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"online config: {message}")


@dataclass
class RoundReport:
    """What one round did and decided (also written as ``round.json``)."""

    round: int
    events: int
    first_event_id: int | None
    last_event_id: int | None
    samples: int
    positives: int
    mined_negatives: int
    examples: int
    champion_dir: str
    champion_version: str
    challenger_dir: str | None = None
    challenger_version: str | None = None
    #: the queries the gate scored (:func:`gate_queries`); never those of a report
    held_out_queries: list[str] = field(default_factory=list)
    champion_ndcg: float | None = None
    challenger_ndcg: float | None = None
    promoted: bool = False
    promoted_dir: str | None = None
    reason: str = ""
    mean_delta: float | None = None
    p_value: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def feedback_database_url(run_dir: str | Path) -> str:
    """The default feedback store of a run: ``sqlite:///RUN_DIR/feedback.sqlite`` (as the
    service's :class:`~shopaug.serve.settings.Settings`)."""
    path = (Path(run_dir) / FEEDBACK_DB).resolve()
    return f"sqlite:///{path.as_posix()}"


def logged_query_keys(store: FeedbackStore) -> set[str]:
    """Every query id and normalised query text (:func:`query_key`) in the whole log."""
    keys: set[str] = set()
    for event in store.read_new(after_id=0):
        if event.query_id:
            keys.add(event.query_id)
        if event.query:
            keys.add(query_key(event.query))
    return keys


def held_out_queries(run_dir: str | Path, dataset: Dataset, logged: set[str]) -> list[str]:
    """The gate's evaluation queries (see step 4 of the module docstring), sorted.

    The first test fold of the run is used (:meth:`CatalogSource.test_fold`: ``folds.json``,
    or for a run without that file the folds ``shopaug run`` would have written).

    Raises:
        ConfigError: no held-out query is left (every test query was used for feedback).
    """
    test = CatalogSource.from_run_dir(run_dir).test_fold(dataset)
    positives = dataset.positives(query_ids=test)
    held = sorted(
        qid
        for qid in test
        if positives.get(qid)
        and qid in dataset.query_by_id
        and qid not in logged
        and query_key(dataset.query_by_id[qid].text) not in logged
    )
    if not held:
        raise ConfigError(
            f"no held-out query is left in the test fold of {run_dir} ({len(test)} queries): "
            "every one appears in the feedback log"
        )
    return held


def is_gate_query(query_id: str) -> bool:
    """True for the held-out queries that gate a round (about half, by a hash of the id)."""
    return hashlib.sha256(query_id.encode("utf-8")).digest()[0] % 2 == 0


def gate_queries(held_out: Sequence[str]) -> list[str]:
    """The held-out queries the gate scores (see step 4 of the module docstring).

    Raises:
        ConfigError: none of ``held_out`` is a gate query.
    """
    chosen = [q for q in held_out if is_gate_query(q)]
    if not chosen:
        raise ConfigError(
            f"none of the {len(held_out)} held-out queries is a gate query; the test fold is "
            "too small to gate a round"
        )
    return chosen


def report_queries(held_out: Sequence[str]) -> list[str]:
    """The held-out queries the gate never reads: what a report of the served model shows."""
    return [q for q in held_out if not is_gate_query(q)]


@dataclass(frozen=True)
class RankingModel:
    """A model directory's query encoder and the run's catalog encoded by its item encoder
    (the same encoder but for a query tower), ranking as the service ranks with that
    directory: fused with BM25 when it holds a ``fusion.json``, the top ``top_k`` reordered by
    its ``reranker/`` (:class:`~shopaug.retrieval.reranking.FeatureReranker`, the class the
    service reranks with) when it holds one."""

    version: str
    encoder: Encoder
    ranker: CatalogRanker
    fusion: FusionSpec | None = None
    bm25: BM25Retriever | None = None
    reranker: FeatureReranker | None = None

    @classmethod
    def load(
        cls,
        model_dir: Path,
        catalog: RunCatalog,
        cache_dir: str | Path | None = None,
        *,
        bm25: BM25Retriever | None = None,
    ) -> RankingModel:
        """Load ``model_dir`` and encode ``catalog`` through the embedding cache; a fusing
        directory uses ``bm25`` (built over the catalog texts when not given)."""
        fusion = read_fusion(model_dir)
        towers, vectors = load_model_catalog(model_dir, catalog.texts, cache_dir)
        if fusion is not None and bm25 is None:
            bm25 = BM25Retriever(catalog.texts)
        ranker = CatalogRanker(vectors, catalog.product_ids)
        reranker = None
        if (model_dir / RERANKER_DIR).is_dir():
            reranker = _load_reranker(
                model_dir / RERANKER_DIR,
                catalog,
                vectors,
                cache_dir,
                bm25=None if bm25 is None else bm25.index,
            )
        return cls(towers.version, towers.query, ranker, fusion, bm25 if fusion else None, reranker)

    def rank(self, queries: Mapping[str, str], depth: int) -> Run:
        """query id -> the top ``depth`` of the catalog for its text."""
        query_ids = list(queries)
        vectors = self.encoder.encode([queries[q] for q in query_ids])  # (n_queries, dim)
        first_depth = depth if self.reranker is None else max(depth, self.reranker.top_k)
        if self.fusion is None or self.bm25 is None:
            first = self.ranker.run(query_ids, vectors, depth=first_depth)
        else:
            fused_depth = max(first_depth, self.fusion.depth)
            dense = self.ranker.run(query_ids, vectors, depth=fused_depth)
            lexical = bm25_run(
                self.bm25,
                self.ranker.product_ids,
                {q: queries[q] for q in query_ids},
                depth=fused_depth,
            )
            first = self.fusion.fuse(dense, lexical, depth=first_depth)
        if self.reranker is None:
            return {q: first[q][:depth] for q in query_ids}
        return {
            q: self.reranker.rerank(queries[q], vectors[i], first[q])[:depth]
            for i, q in enumerate(query_ids)
        }


def _load_reranker(
    folder: Path,
    catalog: RunCatalog,
    vectors: np.ndarray,
    cache_dir: str | Path | None,
    *,
    bm25: BM25Index | None,
) -> FeatureReranker:
    """The reranker in ``folder`` as the service loads it: its features over the first
    stage's vectors, or over its own (base) encoder's when it holds ``encoder/``; ``bm25``:
    the fusion's index of the same texts, shared (else the reranker builds one)."""
    own = folder / FEATURES_ENCODER_DIR
    if not own.is_dir():
        return FeatureReranker.load(folder, catalog.products, catalog.texts, vectors, bm25=bm25)
    towers, own_vectors = load_model_catalog(own, catalog.texts, cache_dir)
    return FeatureReranker.load(
        folder, catalog.products, catalog.texts, own_vectors, towers.query, bm25=bm25
    )


def per_query_ndcg(model: RankingModel, dataset: Dataset, query_ids: Sequence[str]) -> np.ndarray:
    """NDCG@10 of ``model``'s ranking of the whole catalog, one value per query."""
    run = model.rank({qid: dataset.query_by_id[qid].text for qid in query_ids}, 10)
    return evaluate_run(
        run, dataset.qrels(query_ids=query_ids), metrics=[METRIC], query_ids=list(query_ids)
    )[METRIC]


def mine_negatives(
    samples: pd.DataFrame,
    champion: RankingModel,
    catalog: RunCatalog,
    config: OnlineConfig,
) -> dict[str, list[str]]:
    """query id -> product ids mined from the champion's ranking (step 2 of the module doc),
    by :func:`shopaug.augment.mining.mine_hard_negatives` with the clicks as positives."""
    if config.mined_negatives_per_query == 0 or samples.empty:
        return {}
    in_catalog = set(catalog.product_ids)
    clicks = samples[(samples["label"] == 1) & samples["product_id"].isin(in_catalog)]
    if clicks.empty:
        return {}
    queries = {
        str(qid): Query(str(qid), str(group["query"].iloc[0]))
        for qid, group in clicks.groupby("query_id", sort=True)
    }
    judgments = [
        Judgment(str(qid), str(pid), "click")
        for qid, pid in clicks[["query_id", "product_id"]].drop_duplicates().itertuples(index=False)
    ]
    feedback = Dataset(
        name="feedback",
        products=list(catalog.products),
        queries=list(queries.values()),
        judgments=judgments,
        gains={"click": 1},
    )
    mining = MiningConfig(
        method="dense",
        negatives_per_query=config.mined_negatives_per_query,
        range_min=config.mining_range_min,
        range_max=config.mining_range_max,
        margin=config.mining_margin,
        sampling="random",
        seed=config.seed,
        show_progress=False,
    )
    retriever = DenseRetriever.from_vectors(champion.ranker.item_vectors, champion.encoder)
    frame, _ = mine_hard_negatives(feedback, list(queries), mining, retriever=retriever)
    negatives = frame[frame["kind"] == "negative"]
    return {
        str(qid): [str(p) for p in group["product_id"]]
        for qid, group in negatives.groupby("query_id", sort=True)
    }


def training_examples(
    samples: pd.DataFrame,
    mined: dict[str, list[str]],
    texts: dict[str, str],
    config: OnlineConfig,
) -> list[TrainingExample]:
    """One group per clicked (query, product): its IPW weight, negatives drawn (seeded) from
    the query's skip-above and mined negatives, never a product clicked for the query."""
    rng = np.random.default_rng(config.seed + 1)
    examples: list[TrainingExample] = []
    for query_id, group in samples.groupby("query_id", sort=True):
        query = str(group["query"].iloc[0])
        positives = group[(group["label"] == 1) & group["product_id"].isin(texts)]
        clicked = set(positives["product_id"])
        skipped = [p for p in group.loc[group["label"] == 0, "product_id"] if p not in clicked]
        pool = [p for p in dict.fromkeys([*skipped, *mined.get(str(query_id), [])]) if p in texts]
        pool = [p for p in pool if p not in clicked]
        for product_id, weight in zip(positives["product_id"], positives["weight"]):
            chosen: list[str] = []
            if pool and config.negatives_per_example:
                size = min(config.negatives_per_example, len(pool))
                chosen = [pool[i] for i in sorted(rng.choice(len(pool), size=size, replace=False))]
            examples.append(
                TrainingExample(
                    query=query,
                    positive=texts[product_id],
                    negatives=[texts[p] for p in chosen],
                    weight=float(weight),
                )
            )
    return examples


def fine_tune(
    champion_dir: Path,
    examples: Sequence[TrainingExample],
    out_dir: Path,
    config: OnlineConfig,
) -> Path:
    """Fine-tune a copy of the champion for ``config.steps`` steps; return the challenger dir.

    A query tower trains its query encoder (and item adapter) against its frozen item model.
    The challenger is the champion's whole pipeline with a retrained encoder
    (:func:`carry_pipeline`): its ``fusion.json`` and ``reranker/`` come along, so a promotion
    never drops a stage and the gate compares the pipelines the service would serve.
    """
    model = load_trainable(champion_dir)
    hashing = is_hashing_model(champion_dir)
    lr = config.lr if config.lr is not None else (5e-4 if hashing else 2e-5)
    batches_per_epoch = max(1, math.ceil(len(examples) / config.batch_size))
    train_config = TrainConfig(
        lr=lr,
        batch_size=config.batch_size,
        max_steps=config.steps,
        epochs=max(1, math.ceil(config.steps / batches_per_epoch)),
        warmup_ratio=0.1,
        loss="infonce",
        temperature=0.05,
        seed=config.seed,
        log_every=max(1, config.steps // 5),
    )
    work = out_dir / "train"
    fit(model, examples, train_config, run_dir=work, resume=False, show_progress=False)
    challenger = out_dir / "challenger"
    if challenger.exists():
        shutil.rmtree(challenger)
    (work / "model").rename(challenger)
    carry_pipeline(champion_dir, challenger)
    shutil.rmtree(work / "checkpoints", ignore_errors=True)  # optimizer state: not needed
    return challenger


def carry_pipeline(champion_dir: Path, challenger_dir: Path) -> None:
    """Give ``challenger_dir`` (a retrained encoder) the champion's other stages: its
    ``fusion.json`` and its ``reranker/``. A reranker whose features used the champion's own
    encoder (no ``reranker/encoder/``) gets a copy of that encoder as ``reranker/encoder/``:
    its features stay the ones it was trained on while the first stage changes."""
    if (champion_dir / FUSION_FILE).is_file():
        shutil.copy2(champion_dir / FUSION_FILE, challenger_dir / FUSION_FILE)
    reranker = champion_dir / RERANKER_DIR
    if not reranker.is_dir():
        return
    target = challenger_dir / RERANKER_DIR
    shutil.copytree(reranker, target, dirs_exist_ok=False)
    if not (reranker / FEATURES_ENCODER_DIR).is_dir():
        shutil.copytree(
            champion_dir,
            target / FEATURES_ENCODER_DIR,
            ignore=shutil.ignore_patterns(RERANKER_DIR, FUSION_FILE),
        )


def next_round(run_dir: Path) -> int:
    """1 + the highest round number under ``RUN_DIR/online``."""
    numbers = [
        int(path.name.split("-", 1)[1])
        for path in (run_dir / ONLINE_DIR).glob("round-*")
        if path.name.split("-", 1)[1].isdigit()
    ]
    return max(numbers, default=0) + 1


def run_online_round(
    run_dir: str | Path,
    config: OnlineConfig | None = None,
    *,
    database_url: str | None = None,
    service_url: str | None = None,
    admin_token: str | None = None,
    cache_dir: str | Path | None = None,
) -> RoundReport:
    """Run one round of the online loop on ``run_dir`` (see the module docstring).

    Args:
        run_dir: a run directory (config.yaml, model/ or current, folds.json).
        config: round settings.
        database_url: the feedback store; default ``RUN_DIR/feedback.sqlite``.
        service_url: base URL of the running service to reload after a promotion.
        admin_token: that service's admin token.
        cache_dir: embedding cache folder.

    Returns:
        The :class:`RoundReport`; also written to ``RUN_DIR/online/round-NNNN/round.json``.
    """
    started = time.perf_counter()
    config = config or OnlineConfig()
    run_dir = Path(run_dir)
    champion_dir = resolve_model_dir(run_dir / CURRENT)
    store = FeedbackStore(database_url or feedback_database_url(run_dir))
    try:
        batch = collect_feedback(
            store,
            position_model=PositionBiasModel.power_law(config.propensity_eta),
            max_weight=config.max_weight,
            consumer=ONLINE_CONSUMER,
        )
        number = next_round(run_dir)
        round_dir = run_dir / ONLINE_DIR / f"round-{number:04d}"
        source = CatalogSource.from_run_dir(run_dir)
        dataset = source.load()
        catalog = RunCatalog.from_dataset(dataset, source.text_fields)
        champion = RankingModel.load(champion_dir, catalog, cache_dir)
        samples = batch.samples
        report = RoundReport(
            round=number,
            events=batch.events,
            first_event_id=batch.first_id,
            last_event_id=batch.last_id,
            samples=len(samples),
            positives=int((samples["label"] == 1).sum()) if len(samples) else 0,
            mined_negatives=0,
            examples=0,
            champion_dir=str(champion_dir),
            champion_version=champion.version,
        )
        if report.positives == 0:
            report.reason = f"no clicks in {batch.events} new events: nothing to train"
        else:
            _train_and_gate(
                report,
                _RoundInputs(run_dir, round_dir, dataset, catalog, champion, samples, cache_dir),
                store,
                config,
                service_url=service_url,
                admin_token=admin_token,
            )
        if batch.last_id is not None:
            store.mark_consumed(batch.last_id, consumer=ONLINE_CONSUMER)
    finally:
        store.close()
    report.seconds = time.perf_counter() - started
    round_dir.mkdir(parents=True, exist_ok=True)
    (round_dir / "round.json").write_text(json.dumps(report.to_dict(), indent=1), "utf-8")
    logger.info("online round %d: %s", report.round, report.reason)
    return report


@dataclass(frozen=True)
class _RoundInputs:
    """What a round has loaded before it trains and gates."""

    run_dir: Path
    round_dir: Path
    dataset: Dataset
    catalog: RunCatalog
    champion: RankingModel
    samples: pd.DataFrame
    cache_dir: str | Path | None


def _train_and_gate(
    report: RoundReport,
    inputs: _RoundInputs,
    store: FeedbackStore,
    config: OnlineConfig,
    *,
    service_url: str | None,
    admin_token: str | None,
) -> None:
    texts = dict(zip(inputs.catalog.product_ids, inputs.catalog.texts))
    mined = mine_negatives(inputs.samples, inputs.champion, inputs.catalog, config)
    examples = training_examples(inputs.samples, mined, texts, config)
    report.mined_negatives = sum(len(v) for v in mined.values())
    report.examples = len(examples)
    held = held_out_queries(inputs.run_dir, inputs.dataset, logged_query_keys(store))
    gate = gate_queries(held)
    report.held_out_queries = gate
    challenger_dir = fine_tune(Path(report.champion_dir), examples, inputs.round_dir, config)
    challenger = RankingModel.load(
        challenger_dir, inputs.catalog, inputs.cache_dir, bm25=inputs.champion.bm25
    )
    report.challenger_dir = str(challenger_dir)
    report.challenger_version = challenger.version
    champion_metric = per_query_ndcg(inputs.champion, inputs.dataset, gate)
    challenger_metric = per_query_ndcg(challenger, inputs.dataset, gate)
    report.champion_ndcg = float(champion_metric.mean())
    report.challenger_ndcg = float(challenger_metric.mean())
    decision: Decision = gate_and_promote(
        inputs.run_dir,
        challenger_dir,
        champion_metric,
        challenger_metric,
        tolerance=config.tolerance,
        service_url=service_url,
        admin_token=admin_token,
    )
    report.promoted = decision.promote
    report.reason = decision.reason
    report.mean_delta = decision.mean_delta
    report.p_value = decision.p_value
    if decision.promote:
        report.promoted_dir = str(resolve_model_dir(inputs.run_dir / CURRENT))
