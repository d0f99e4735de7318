"""A customer's other purchases are never that customer's negatives in two-tower training.

The fixture's customers buy from a "taste" quarter of the catalog, so uniform, in-batch and
text-hard negatives would often be items the customer bought; each test shows that they are
drawn without the exclusions (so the test can fail) and never with them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shopaug.data.retail import load_retail, validation_and_test
from shopaug.experiment.recommend import parse_config
from shopaug.experiment.recommend_data import RecommendConfig, SplitView, TwoTowerRow, prepare_split
from shopaug.experiment.recommend_systems import (
    customer_examples,
    purchase_exclusions,
    text_neighbours,
    train_row,
    with_text_hard_negatives,
)
from shopaug.models.two_tower import TwoTowerRecommender
from shopaug.samplers import SamplerConfig, build_sampler
from shopaug.train import TrainConfig, TrainingExample
from shopaug.train.loop import epoch_batches
from shopaug.train.sampling import NegativeSampling
from shopaug.train.trainable import build_candidates
from test_recommend_task import CONFIG, retail_file

PLANTED = "1000"  # a fixture customer (taste 0) with several training invoices


class Captured(Exception):
    """Raised by the stand-in for fit once it has seen what train_row passes."""

    def __init__(self, **seen: Any) -> None:
        super().__init__("captured")
        self.seen = seen


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> tuple[RecommendConfig, SplitView]:
    root = tmp_path_factory.mktemp("retail")
    retail_file(root / "data")
    config = parse_config({**CONFIG, "data_dir": str(root / "data")}, "test")
    data = load_retail(config.data_dir, title_cut=config.cut)
    splits = validation_and_test(data.lines, config.cut, validation_days=config.validation_days)
    catalog = tuple(sorted(data.titles))
    test = prepare_split(splits.test, eval_customers=None, seed=0, catalog=catalog)
    valid = prepare_split(splits.validation, eval_customers=None, seed=0, catalog=test.catalog)
    return config, valid


def purchases(view: SplitView) -> dict[str, set[str]]:
    train = view.split.train
    return {str(c): set(items) for c, items in train.groupby("customer_id")["item_id"]}


def captured_training(
    row: TwoTowerRow, config: RecommendConfig, view: SplitView, tmp_path: Path, monkeypatch: Any
) -> dict[str, Any]:
    """What train_row hands to fit: the examples, settings and negative sampling."""
    import shopaug.train

    def stand_in(model: Any, examples: Any, settings: Any, **options: Any) -> None:
        raise Captured(examples=list(examples), settings=settings, **options)

    monkeypatch.setattr(shopaug.train, "fit", stand_in)
    vectors = np.random.default_rng(0).normal(size=(len(view.catalog), 8)).astype(np.float32)

    def build_model(_: TwoTowerRow) -> TwoTowerRecommender:
        return TwoTowerRecommender(view.catalog, vectors)

    with pytest.raises(Captured) as caught:
        train_row(row, build_model, view, config, tmp_path / "row")
    return caught.value.seen


def customers_of(examples: list[TrainingExample], config: RecommendConfig, view: SplitView):
    """The customer of each example (examples are train_row's, in customer_examples order)."""
    pairs = customer_examples(view, config)
    assert [e for _, e in pairs][: len(examples)] == examples
    return [customer for customer, _ in pairs][: len(examples)]


def test_sampled_negatives_never_include_the_customers_purchases(
    split: tuple[RecommendConfig, SplitView], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, view = split
    seen = captured_training(
        TwoTowerRow("uniform", sampler="uniform", negatives=4), config, view, tmp_path, monkeypatch
    )
    sampling: NegativeSampling = seen["negative_sampling"]
    examples: list[TrainingExample] = seen["examples"]
    customers = customers_of(examples, config, view)
    bought = purchases(view)
    assert PLANTED in customers and len(bought[PLANTED]) >= 5

    def hits(draws: NegativeSampling) -> dict[str, int]:
        """Per customer, how many of their own purchases were drawn as their negatives."""
        found: dict[str, int] = {}
        for step, batch in enumerate(epoch_batches(0, 0, batch_size=16, size=len(examples))):
            drawn = draws.draw([examples[i] for i in batch], seed=0, step=step + 1)
            for index, negatives in zip(batch, drawn.examples, strict=True):
                customer = customers[index]
                found[customer] = found.get(customer, 0) + len(
                    set(negatives.negatives) & bought[customer]
                )
        return found

    assert hits(replace(sampling, exclusions=None))[PLANTED] > 0  # would be drawn
    masked = hits(sampling)
    assert masked[PLANTED] == 0
    assert sum(masked.values()) == 0  # every customer, not only the planted one


def test_in_batch_negatives_leave_out_the_rows_customers_purchases(
    split: tuple[RecommendConfig, SplitView], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, view = split
    row = TwoTowerRow("in-batch", sampler="in_batch", negatives=4, log_q=True, in_batch=True)
    seen = captured_training(row, config, view, tmp_path, monkeypatch)
    sampling: NegativeSampling = seen["negative_sampling"]
    settings: TrainConfig = seen["settings"]
    assert settings.in_batch_negatives
    examples: list[TrainingExample] = seen["examples"]
    customers = customers_of(examples, config, view)
    bought = purchases(view)
    unmasked = masked = 0
    for step, batch in enumerate(epoch_batches(0, 0, batch_size=16, size=len(examples))):
        drawn = sampling.draw([examples[i] for i in batch], seed=0, step=step + 1)
        plain = build_candidates(drawn.examples, in_batch_negatives=True)
        kept = build_candidates(drawn.examples, in_batch_negatives=True, excluded=drawn.excluded)
        for position, index in enumerate(batch):
            own = bought[customers[index]]
            assert kept.candidates[position][0] == examples[index].positive  # positive stays
            unmasked += len(set(plain.candidates[position][1:]) & own)
            masked += len(set(kept.candidates[position][1:]) & own)
    assert unmasked > 0  # the batch's other positives include items the row's customer bought
    assert masked == 0


def test_text_hard_negatives_skip_the_customers_purchases(
    split: tuple[RecommendConfig, SplitView],
) -> None:
    config, view = split
    pairs = customer_examples(view, config)
    examples = [example for _, example in pairs]
    items = [item for item in view.catalog if item not in view.split.new_items]
    rng = np.random.default_rng(1)
    model = TwoTowerRecommender(view.catalog, rng.normal(size=(len(view.catalog), 8)))
    neighbours = text_neighbours(model, items, depth=30)
    exclusions = purchase_exclusions(view, pairs)
    bought = purchases(view)

    def overlap(rows: list[TrainingExample]) -> int:
        return sum(
            len(set(example.negatives) & bought[customer])
            for (customer, _), example in zip(pairs, rows, strict=True)
        )

    plain = with_text_hard_negatives(examples, neighbours, items, n=6, seed=0)
    masked = with_text_hard_negatives(
        examples, neighbours, items, n=6, seed=0, exclusions=exclusions
    )
    assert overlap(plain) > 0
    assert overlap(masked) == 0
    assert all(len(example.negatives) == 6 for example in masked)  # still n each


def test_exclusions_reach_the_sampler_and_the_fingerprint() -> None:
    catalog = [f"item{i}" for i in range(12)]
    sampler = build_sampler(SamplerConfig(name="uniform"), n_items=len(catalog))
    bought = {"history a": {f"item{i}" for i in range(10)}}
    sampling = NegativeSampling(catalog=catalog, sampler=sampler, n=2, exclusions=bought)
    batch = [
        TrainingExample(query="history a", positive="item0"),
        TrainingExample(query="history b", positive="item0"),
    ]
    drawn_a: set[str] = set()
    drawn_b: set[str] = set()
    for step in range(1, 30):
        sampled = sampling.draw(batch, seed=3, step=step)
        drawn_a |= set(sampled.examples[0].negatives)
        drawn_b |= set(sampled.examples[1].negatives)
        assert sampled.excluded == [frozenset(bought["history a"]), frozenset()]
    assert drawn_a <= {"item10", "item11"}
    assert drawn_b & bought["history a"]  # another query's draws are not restricted
    plain = NegativeSampling(catalog=catalog, sampler=sampler, n=2)
    assert plain.fingerprint() != sampling.fingerprint()  # a resumed run must not mix them


def test_build_candidates_checks_the_exclusions_length() -> None:
    examples = [TrainingExample(query="q", positive="a", negatives=["b"])]
    with pytest.raises(ValueError, match="one per group"):
        build_candidates(examples, in_batch_negatives=False, excluded=[set(), set()])
    row = build_candidates(examples, in_batch_negatives=False, excluded=[{"a", "b"}])
    assert row.candidates == [["a"]]  # the positive stays, the excluded negative goes
