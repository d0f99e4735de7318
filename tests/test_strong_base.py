"""Issue 19: the sentence-transformers fine-tune as a row, and the recipe pieces that make our
own training as strong as it: Partial positives for queries without an Exact product, batches
without duplicate texts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shopaug.augment.judged import judged_samples
from shopaug.augment.mining import MiningConfig, positive_rows
from shopaug.data.records import Dataset, Judgment, Product, Query
from shopaug.errors import ConfigError
from shopaug.experiment.config import parse_run_config
from shopaug.train.config import TrainConfig, TrainingExample
from shopaug.train.loop import epoch_batches, example_texts, no_duplicate_batches


def _dataset() -> Dataset:
    products = [
        Product("p1", "blue velvet sofa"),
        Product("p2", "red velvet sofa"),
        Product("p3", "oak table"),
        Product("p4", "table lamp"),
    ]
    queries = [Query("q1", "velvet sofa"), Query("q2", "lamp")]
    judgments = [
        Judgment("q1", "p1", "Exact"),
        Judgment("q1", "p2", "Partial"),
        Judgment("q1", "p3", "Irrelevant"),
        Judgment("q2", "p4", "Partial"),  # best label Partial
        Judgment("q2", "p3", "Irrelevant"),
    ]
    gains = {"Exact": 2, "Partial": 1, "Irrelevant": 0}
    return Dataset("toy", products, queries, judgments, gains)


def test_a_query_whose_best_label_is_partial_keeps_its_partial_products() -> None:
    dataset = _dataset()
    rows = positive_rows(dataset, ["q1", "q2"], MiningConfig(positive_min_gain=2))
    assert rows == {"q1": [("p1", 2)], "q2": [("p4", 1)]}
    strict = MiningConfig(positive_min_gain=2, positive_fallback_gain=None)
    assert positive_rows(dataset, ["q1", "q2"], strict) == {"q1": [("p1", 2)]}
    frame, counts = judged_samples(
        dataset, ["q1", "q2"], MiningConfig(positive_min_gain=2), negatives=True
    )
    assert counts == {"queries": 2, "positives": 2, "negatives": 2}
    assert set(frame[frame["kind"] == "positive"]["product_id"]) == {"p1", "p4"}


def test_no_duplicate_batches_keep_every_example_once_and_no_text_twice() -> None:
    examples = [TrainingExample("q1", f"p{i}", ["n1"]) for i in range(4)]
    examples += [TrainingExample(f"q{i}", f"x{i}", [f"n{i}"]) for i in range(2, 10)]
    texts = example_texts(examples)
    batches = no_duplicate_batches(np.arange(len(examples)), texts, batch_size=4)
    assert len(batches) == 3  # ceil(12 / 4): the loop's steps per epoch
    flat = sorted(int(i) for batch in batches for i in batch)
    assert flat == list(range(len(examples)))
    for batch in batches:
        seen: list[str] = [t for i in batch for t in texts[int(i)]]
        if len(batch) <= 4:
            assert len(seen) == len(set(seen)), batch
    # q1 has 4 examples for 3 batches: one lands in a batch with another q1 example, the rest
    # are spread one a batch
    per_batch = [sum(1 for i in batch if examples[int(i)].query == "q1") for batch in batches]
    assert sorted(per_batch) == [1, 1, 2]


def test_epoch_batches_with_texts_are_a_pure_function_of_seed_and_epoch() -> None:
    texts = [frozenset({f"q{i % 3}", f"p{i}"}) for i in range(20)]
    first = epoch_batches(0, 1, batch_size=4, size=20, texts=texts)
    again = epoch_batches(0, 1, batch_size=4, size=20, texts=texts)
    other = epoch_batches(0, 2, batch_size=4, size=20, texts=texts)
    assert [b.tolist() for b in first] == [b.tolist() for b in again]
    assert [b.tolist() for b in first] != [b.tolist() for b in other]
    assert len(first) == 5


def test_buckets_and_no_duplicates_are_refused_together() -> None:
    with pytest.raises(ValueError, match="length_buckets and no_duplicates"):
        TrainConfig(length_buckets=True, no_duplicates=True)


def test_a_sentence_transformers_row_needs_the_full_tower() -> None:
    with pytest.raises(ConfigError, match="tower: full"):
        parse_run_config(
            {
                "tower": "query",
                "ablation": [
                    {
                        "name": "st",
                        "methods": ["human-negatives"],
                        "trainer": "sentence-transformers",
                    }
                ],
            },
            source="test",
        )
    with pytest.raises(ConfigError, match="trainer must be one of"):
        parse_run_config(
            {"ablation": [{"name": "x", "methods": ["positives"], "trainer": "keras"}]},
            source="test",
        )


def test_triples_give_every_positive_a_negative_never_a_known_positive() -> None:
    from shopaug.experiment.rows import triple_examples

    dataset = _dataset()
    frame, _ = judged_samples(
        dataset, ["q1", "q2"], MiningConfig(positive_min_gain=1), negatives=True
    )
    frame = frame[~((frame["query_id"] == "q2") & (frame["kind"] == "negative"))]
    fields = ("title",)
    catalog = [p.render(fields) for p in dataset.products]
    known = {"q1": {"p1", "p2"}, "q2": {"p4"}}
    for seed in range(5):
        examples = triple_examples(
            dataset,
            frame,
            text_fields=fields,
            catalog_texts=catalog,
            known_positives=known,
            seed=seed,
        )
        assert len(examples) == 3  # q1: p1 and p2; q2: p4
        for example in examples:
            assert len(example.negatives) == 1
        by_query = {(e.query, e.positive): e.negatives[0] for e in examples}
        assert by_query[("velvet sofa", "blue velvet sofa")] == "oak table"  # judged 0
        assert by_query[("lamp", "table lamp")] not in {"table lamp"}


@pytest.mark.slow
def test_the_sentence_transformers_row_is_trained_by_the_librarys_trainer(
    tmp_path: Path, monkeypatch
) -> None:
    """A small fixture run: the row calls SentenceTransformerTrainer.train (spied), keeps the
    last model, and is fused and tested against like the other rows."""
    pytest.importorskip("datasets")
    import sentence_transformers

    from shopaug.experiment import runner
    from shopaug.experiment.tasks import read_config

    calls: list[int] = []
    original = sentence_transformers.SentenceTransformerTrainer.train

    def spy(self, *args, **kwargs):
        calls.append(len(self.train_dataset))
        assert type(self.loss).__name__ == "MultipleNegativesRankingLoss"
        assert self.args.batch_sampler == "no_duplicates"
        return original(self, *args, **kwargs)

    monkeypatch.setattr(sentence_transformers.SentenceTransformerTrainer, "train", spy)
    mapping, _ = read_config("quick")
    mapping.update(
        tower="full",
        train_folds=1,
        ablation=[
            {
                "name": "sentence-transformers fine-tune",
                "methods": ["human-negatives"],
                "trainer": "sentence-transformers",
            },
            {"name": "human negatives", "methods": ["human-negatives"]},
        ],
        reranker={"enabled": False},
    )
    mapping["train"].update(epochs=1, batch_size=16, max_steps=None)
    config = parse_run_config(mapping, source="test")
    config.show_progress = False
    result = runner.run_experiment(config, tmp_path / "run")
    assert len(calls) >= 1 and calls[0] > 0
    names = {entry["name"]: entry for entry in result["ablation"]}
    st = names["sentence-transformers fine-tune"]
    assert st["kind"] == "fine-tune"
    assert "sentence-transformers fine-tune + bm25 (convex)" in names
    ours = names["human negatives"]
    assert "p_value_vs_st_fine_tune" in ours and ours["vs_st_fine_tune"] is not None
