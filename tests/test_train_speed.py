"""What makes CPU training fast: length buckets, sequence-length sizing, threads, two towers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shopaug.train import TrainConfig, TrainingExample, build_candidates, fit, score_batch
from shopaug.train.loop import epoch_batches, example_lengths, set_torch_threads
from shopaug.train.trainable import SequenceLengthModel, TwoTowerModel
from test_train import TinyEncoder, ranking_accuracy, tiny_config, toy_examples


@pytest.mark.parametrize("size", [1, 31, 32, 200, 1601])
def test_length_buckets_visit_every_example_once_in_the_same_batches(size: int) -> None:
    lengths = np.random.default_rng(3).integers(5, 80, size=size)
    first = epoch_batches(4, 2, batch_size=32, size=size, lengths=lengths, bucket_batches=5)
    again = epoch_batches(4, 2, batch_size=32, size=size, lengths=lengths, bucket_batches=5)
    assert [b.tolist() for b in first] == [b.tolist() for b in again]
    assert sorted(np.concatenate(first).tolist()) == list(range(size))
    assert len(first) == -(-size // 32)  # as many steps as without buckets
    plain = epoch_batches(4, 2, batch_size=32, size=size)
    assert len(plain) == len(first)
    if size > 64:
        other_epoch = epoch_batches(4, 3, batch_size=32, size=size, lengths=lengths)
        assert [b.tolist() for b in other_epoch] != [b.tolist() for b in first]

        def spread(batches: list[np.ndarray]) -> float:  # mean length range inside a batch
            return float(np.mean([np.ptp(lengths[b]) for b in batches]))

        assert spread(first) < spread(plain) / 2


def test_without_buckets_the_batches_are_the_epoch_order() -> None:
    from shopaug.train import epoch_order

    batches = epoch_batches(7, 1, batch_size=4, size=10)
    assert np.concatenate(batches).tolist() == epoch_order(7, 1, 10).tolist()
    assert [len(b) for b in batches] == [4, 4, 2]


def test_example_lengths_count_every_text() -> None:
    example = TrainingExample(query="ab", positive="cde", negatives=["f", "gh"])
    assert example_lengths([example]).tolist() == [8]


def test_fit_with_length_buckets_learns_and_resumes(tmp_path: Path) -> None:
    config = tiny_config(length_buckets=True, epochs=15, checkpoint_every=4)
    model = TinyEncoder()
    before = ranking_accuracy(model.eval(), toy_examples())
    fit(model, toy_examples(), config, run_dir=tmp_path / "a", show_progress=False)
    assert ranking_accuracy(model.eval(), toy_examples()) >= 0.8 > before

    class Stop(Exception):
        pass

    def stop_mid_epoch(info: object) -> None:
        if getattr(info, "step", 0) == 21:
            raise Stop

    resumed = TinyEncoder()
    with pytest.raises(Stop):
        fit(
            resumed,
            toy_examples(),
            config,
            run_dir=tmp_path / "b",
            on_step=stop_mid_epoch,
            show_progress=False,
        )
    resumed = TinyEncoder(seed=1)  # weights come from the checkpoint
    fit(resumed, toy_examples(), config, run_dir=tmp_path / "b", show_progress=False)
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_torch_threads_follow_the_config() -> None:
    before = torch.get_num_threads()
    try:
        assert set_torch_threads(1) == 1
        assert torch.get_num_threads() == 1
        assert set_torch_threads(None) >= 1
    finally:
        torch.set_num_threads(before)


class TokenisingEncoder(TinyEncoder):
    """A TinyEncoder with word "tokens", so the loop can size its sequence length."""

    def __init__(self) -> None:
        super().__init__()
        self.train_length: int | None = None
        self.counted: list[str] = []

    @property
    def max_sequence_length(self) -> int:
        return 3

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        self.counted.extend(texts)
        return np.array([len(text.split()) for text in texts])

    def set_train_sequence_length(self, length: int) -> None:
        self.train_length = length

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        assert self.train_length is not None
        return super().embed([" ".join(text.split()[: self.train_length]) for text in texts])


def test_fit_sizes_the_sequence_length_from_the_texts(tmp_path: Path) -> None:
    examples = [
        TrainingExample(query="a", positive="b c", negatives=["d e f g"]),
        TrainingExample(query="h", positive="i", negatives=["j k"]),
    ]
    model = TokenisingEncoder()
    assert isinstance(model, SequenceLengthModel)
    config = tiny_config(batch_size=2, epochs=1, sequence_length_coverage=0.8)
    fit(model, examples, config, run_dir=tmp_path / "sized", show_progress=False)
    assert sorted(model.counted) == sorted(set(model.counted))  # each distinct text once
    assert len(model.counted) == 6
    assert model.train_length == 2  # 80 % of [1, 2, 4, 1, 1, 2] fit in 2 tokens
    fit(
        model,
        examples,
        tiny_config(batch_size=2, epochs=1, max_seq_length=9),
        run_dir=tmp_path / "fixed",
        show_progress=False,
    )
    assert model.train_length == 3  # configured, capped at the model's maximum
    fit(
        model,
        examples,
        tiny_config(batch_size=2, epochs=1, sequence_length_coverage=1.0),
        run_dir=tmp_path / "capped",
        show_progress=False,
    )
    assert model.train_length == 3


class FrozenItemTower(nn.Module):
    """A query tower (trainable) against fixed item vectors: the two-tower shape."""

    def __init__(self, texts: Sequence[str]) -> None:
        super().__init__()
        self.queries = TinyEncoder(seed=0)
        generator = torch.Generator().manual_seed(1)
        self.items = {
            text: F.normalize(torch.randn(16, generator=generator), dim=0) for text in texts
        }
        self.item_calls: list[list[str]] = []

    def embed_queries(self, texts: Sequence[str]) -> torch.Tensor:
        return self.queries.embed(texts)

    def embed_items(self, texts: Sequence[str]) -> torch.Tensor:
        self.item_calls.append(list(texts))
        return torch.stack([self.items[text] for text in texts])

    def save(self, directory: str | Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)


def test_score_batch_uses_the_two_towers() -> None:
    examples = toy_examples(4)
    texts = {t for e in examples for t in (e.positive, *e.negatives)}
    model = FrozenItemTower(sorted(texts))
    assert isinstance(model, TwoTowerModel)
    batch = build_candidates(examples, in_batch_negatives=True)
    model.eval()  # no dropout: the two computations must agree
    scores, mask = score_batch(model, batch)
    queries = model.embed_queries(batch.queries)
    for row, candidates in enumerate(batch.candidates):
        expected = queries[row] @ torch.stack([model.items[t] for t in candidates]).T
        torch.testing.assert_close(scores[row, : len(candidates)], expected)
        assert mask[row].sum() == len(candidates)
    assert set(model.item_calls[0]) == texts  # candidates through embed_items only, once each
    assert len(model.item_calls[0]) == len(texts)


def test_fit_trains_a_query_tower_against_frozen_items(tmp_path: Path) -> None:
    examples = toy_examples()
    model = FrozenItemTower(sorted({t for e in examples for t in (e.positive, *e.negatives)}))
    config = TrainConfig.model_validate({**tiny_config().model_dump(), "epochs": 30})
    fit(model, examples, config, run_dir=tmp_path, show_progress=False)
    assert ranking_accuracy(model.eval(), examples) >= 11 / 12
