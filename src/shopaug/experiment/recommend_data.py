"""The recommendation task's configuration and its data: one split as rows, histories and truth.

:func:`prepare_split` turns a :class:`~shopaug.data.retail.RetailSplit` into what every system
reads: the catalog (items sold before the cut plus the new items of the window), the training
:class:`~shopaug.models.recommenders.Interactions`, each evaluated customer's history (item
rows, oldest first) and the :class:`~shopaug.eval.recommend.BasketTruth` the ranking is measured
against. :func:`load_views` loads the data of a config and returns both splits' views, exactly
as ``shopaug run`` builds them. Anything built on the split (an external library's rows, e.g.
``benchmarks/recbole_rows.py``) can take ``SplitView.split.train`` or
``SplitView.train_baskets()`` and ``SplitView.truth`` and report through
:func:`shopaug.eval.recommend.evaluate_recommendations`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from shopaug.config import from_mapping
from shopaug.data.retail import (
    RetailData,
    RetailSplit,
    RetailSplits,
    load_retail,
    subsample_customers,
    validation_and_test,
)
from shopaug.errors import ConfigError
from shopaug.eval.recommend import BasketTruth
from shopaug.models.recommenders import FactorConfig, Interactions
from shopaug.train.config import TrainConfig

#: The samplers a two-tower row can train with (``none``: the untrained zero-shot model).
ROW_SAMPLERS = ("none", "uniform", "popularity", "in_batch", "text_hard", "dynamic")
BASELINES = ("popularity", "repeat", "cooccurrence", "als", "bpr", "decayed_frequency", "tifu_knn")
#: The repeat-aware baselines whose hyper-parameters are chosen on validation.
TUNED_BASELINES = ("decayed_frequency", "tifu_knn")


@dataclass(frozen=True)
class TifuKnnGrid:
    """The values searched, on validation Recall@k only, for TIFU-KNN and for personal
    frequency with time decay (every combination; the first best in grid order wins ties).

    The TIFU-KNN defaults (54 combinations) surround the best of a first, wider search of 540
    on this data's validation split (``m`` 3/5/7, ``r_b`` 0.8/0.9/1, ``r_g`` 0.6 to 1 by 0.1,
    ``k`` 100/300/900, ``alpha`` 0.2/0.5/0.7/0.9), which chose ``m`` 7, ``r_b`` 0.9, ``r_g`` 1,
    ``k`` 100, ``alpha`` 0.2: every value but ``r_b`` at an edge, so the grid reaches past them.
    A combination costs about a second on two quiet cores.

    Attributes:
        group_size: ``m`` values.
        within_decay: ``r_b`` values.
        group_decay: ``r_g`` values.
        neighbours: ``k`` values.
        alpha: Weights of the customer's own vector.
        frequency_decay: ``r_b`` values of personal frequency with time decay.
    """

    group_size: tuple[int, ...] = (5, 7, 10)
    within_decay: tuple[float, ...] = (0.9,)
    group_decay: tuple[float, ...] = (0.9, 1.0)
    neighbours: tuple[int, ...] = (50, 100, 300)
    alpha: tuple[float, ...] = (0.1, 0.2, 0.4)
    frequency_decay: tuple[float, ...] = (0.7, 0.8, 0.9, 0.95, 1.0)

    def __post_init__(self) -> None:
        for name in (
            "group_size",
            "within_decay",
            "group_decay",
            "neighbours",
            "alpha",
            "frequency_decay",
        ):
            if not getattr(self, name):
                raise ValueError(f"{name} needs at least one value")


@dataclass(frozen=True)
class TwoTowerRow:
    """One two-tower system.

    Attributes:
        name: Row label.
        sampler: One of :data:`ROW_SAMPLERS`.
        negatives: Sampled negatives per training example.
        alpha: Popularity exponent (``popularity``).
        log_q: Subtract the sampler's log probability from sampled logits (InfoNCE).
        in_batch: Also use the batch's other positives as negatives (no logQ for those).
        augment_text: Items without a training purchase get generated text added to their name.
        temperature: Softmax temperature of ``dynamic``.
    """

    name: str
    sampler: str = "uniform"
    negatives: int = 16
    alpha: float = 0.75
    log_q: bool = False
    in_batch: bool = False
    augment_text: bool = False
    temperature: float = 0.1

    def __post_init__(self) -> None:
        if self.sampler not in ROW_SAMPLERS:
            raise ValueError(f"row {self.name!r}: sampler must be one of {ROW_SAMPLERS}")
        if self.negatives < 1:
            raise ValueError(f"row {self.name!r}: negatives must be >= 1")


@dataclass
class RecommendConfig:
    """``task: recommend`` configs (profiles ``retail-quick``, ``retail-full``).

    Attributes:
        data: Only ``online-retail``.
        data_dir: Folder holding ``online-retail/`` (default ``$SHOPAUG_DATA_DIR``).
        seed: Seeds subsampling, training and the bootstrap.
        device: Only ``cpu`` (the two-tower trains on cached vectors).
        cut: Test cut date; test basket = each customer's first invoice from then on.
        validation_days: Validation cut = ``cut`` minus this many days.
        customers: Keep this many customers (seeded; None = all): the quick slice.
        eval_customers: Evaluate at most this many customers per split (seeded; None = all).
        k: Cut-off of recall, NDCG, coverage, Gini and tail share.
        depth: Length of each ranked list (MRR reads all of it).
        baselines: Which of :data:`BASELINES` to run.
        factors: :class:`FactorConfig` of ALS and BPR.
        tifu: :class:`TifuKnnGrid` searched on validation for ``tifu_knn`` and
            ``decayed_frequency``.
        bpr_iterations: BPR epochs (ALS uses ``factors.iterations``).
        encoder: ``minilm`` or ``hashing`` (tests) for item text.
        training_invoices: Per customer, the last this many invoices before the cut are
            training targets (each with the invoices before it as history).
        positives_per_basket: Items drawn per target invoice.
        max_history: Purchases pooled into the user vector.
        train: :class:`TrainConfig` fields of the two-tower rows (epochs, lr, batch_size, ...).
        rows: The two-tower rows.
        generator: :class:`~shopaug.llm.registry.GeneratorConfig` fields for ``augment_text``
            rows (default: the template generator, no model).
        bootstrap: Bootstrap resamples of each interval.
        repeat_then: Also measure "repeat purchase, then X" (and "<the best repeat-aware
            system>, then X") for X the best learned baseline and the best two-tower row
            (chosen on validation); when "repeat purchase, then <row>" is chosen, the served
            model ranks each customer's own past items first.
    """

    data: str = "online-retail"
    data_dir: str | None = None
    seed: int = 0
    device: str = "cpu"
    cut: str = "2011-10-01"
    validation_days: int = 30
    customers: int | None = None
    eval_customers: int | None = None
    k: int = 20
    depth: int = 100
    baselines: tuple[str, ...] = BASELINES
    factors: FactorConfig = field(default_factory=FactorConfig)
    tifu: TifuKnnGrid = field(default_factory=TifuKnnGrid)
    bpr_iterations: int = 100
    encoder: str = "minilm"
    training_invoices: int = 5
    positives_per_basket: int = 3
    max_history: int = 50
    train: dict[str, Any] = field(default_factory=dict)
    rows: tuple[TwoTowerRow, ...] = ()
    generator: dict[str, Any] = field(default_factory=dict)
    bootstrap: int = 2000
    repeat_then: bool = True

    def train_config(self) -> TrainConfig:
        settings: dict[str, Any] = {
            "epochs": 3,
            "batch_size": 256,
            "lr": 1e-3,
            "metric_name": "val_recall@20",
        }
        settings.update({"seed": self.seed, "early_stopping_patience": 2})
        settings.update(self.train)
        try:
            return TrainConfig(**settings)
        except ValueError as error:
            raise ConfigError(f"config section 'train': {error}") from error


def parse_recommend_config(mapping: Mapping[str, Any], source: str) -> RecommendConfig:
    """Build a :class:`RecommendConfig`; unknown keys and bad values name the section."""
    body = dict(mapping)
    rows = body.pop("rows", [])
    factors = body.pop("factors", None)
    tifu = body.pop("tifu", None)
    if not isinstance(rows, list):
        raise ConfigError(f"{source}: rows must be a list of mappings")
    config = from_mapping(RecommendConfig, body, section=source)
    config.factors = from_mapping(FactorConfig, factors, section=f"{source}: factors")
    config.tifu = from_mapping(TifuKnnGrid, tifu, section=f"{source}: tifu")
    config.rows = tuple(
        from_mapping(TwoTowerRow, row, section=f"{source}: rows[{index}]")
        for index, row in enumerate(rows)
    )
    names = [row.name for row in config.rows]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: row names must be unique, got {names}")
    unknown = sorted(set(config.baselines) - set(BASELINES))
    if unknown:
        raise ConfigError(f"{source}: unknown baseline(s) {unknown}; expected {BASELINES}")
    if config.data != "online-retail":
        raise ConfigError(f"{source}: data must be 'online-retail', got {config.data!r}")
    if config.device != "cpu":
        raise ConfigError(f"{source}: the recommend task runs on the cpu, got {config.device!r}")
    config.train_config()
    return config


@dataclass(frozen=True)
class SplitView:
    """One split as every system sees it.

    Attributes:
        split: The underlying split (training lines, baskets, new items).
        catalog: Items that may be recommended: sold before the cut, or new in the window.
        interactions: Training baskets over ``catalog``.
        customers: The evaluated customers (sorted).
        histories: Item rows bought before the cut, oldest first, per evaluated customer.
        truth: Baskets, catalog, training popularity and new items.
    """

    split: RetailSplit
    catalog: tuple[str, ...]
    interactions: Interactions
    customers: tuple[str, ...]
    histories: tuple[tuple[int, ...], ...]
    truth: BasketTruth

    @property
    def rows(self) -> dict[str, int]:
        return {item: row for row, item in enumerate(self.catalog)}

    def train_baskets(self) -> list[tuple[str, list[str]]]:
        """``(customer, items)`` per training invoice, in time order."""
        return basket_list(self.split.train)


def basket_list(lines: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """``(customer, item ids)`` per invoice of ``lines``, in time order."""
    ordered = lines.sort_values(["timestamp", "invoice"], kind="stable")
    return [
        (str(customer), list(items))
        for (_, customer), items in ordered.groupby(["invoice", "customer_id"], sort=False)[
            "item_id"
        ]
    ]


def prepare_split(
    split: RetailSplit, *, eval_customers: int | None, seed: int, catalog: tuple[str, ...]
) -> SplitView:
    """The :class:`SplitView` of ``split`` over ``catalog`` (every item the model knows).

    Items of ``catalog`` that neither sold before the cut nor are new in the window are left
    out of the split's own catalog.
    """
    sold = set(split.train["item_id"]) | set(split.new_items)
    items = tuple(item for item in catalog if item in sold)
    interactions = Interactions.from_baskets(item_ids=items, baskets=basket_list(split.train))
    customers = sorted(split.baskets)
    if eval_customers is not None and eval_customers < len(customers):
        rng = np.random.default_rng([seed, 7])
        customers = sorted(rng.choice(customers, size=eval_customers, replace=False).tolist())
    index = {item: row for row, item in enumerate(items)}
    all_histories = split.histories()
    histories = tuple(tuple(index[i] for i in all_histories[c]) for c in customers)
    truth = BasketTruth(
        baskets={c: split.baskets[c] for c in customers},
        catalog=items,
        popularity=split.item_counts(),
        new_items=split.new_items,
        bought={c: frozenset(all_histories[c]) for c in customers},
    )
    return SplitView(
        split=split,
        catalog=items,
        interactions=interactions,
        customers=tuple(customers),
        histories=histories,
        truth=truth,
    )


@dataclass(frozen=True)
class RecommendViews:
    """The cleaned data of a config and the views of its two splits.

    Attributes:
        data: Cleaned lines and titles (after the customer slice, if any).
        splits: The validation and test splits.
        validation: The validation split's view (selection and early stopping only).
        test: The test split's view (the figure).
    """

    data: RetailData
    splits: RetailSplits
    validation: SplitView
    test: SplitView


def load_views(config: RecommendConfig) -> RecommendViews:
    """Load, clean and split the data of ``config``, and view both splits over one catalog."""
    data = load_retail(config.data_dir, title_cut=config.cut)
    if config.customers is not None:
        data = subsample_customers(data, config.customers, seed=config.seed)
    splits = validation_and_test(data.lines, config.cut, validation_days=config.validation_days)
    test = prepare_split(
        splits.test,
        eval_customers=config.eval_customers,
        seed=config.seed,
        catalog=tuple(sorted(data.titles)),
    )
    validation = prepare_split(
        splits.validation,
        eval_customers=config.eval_customers,
        seed=config.seed,
        catalog=test.catalog,
    )
    return RecommendViews(data=data, splits=splits, validation=validation, test=test)
