"""Query-group training: the multi-positive loss, batch masks, and the loop on a tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from shopaug.losses import InfoNCELoss
from shopaug.losses.multi_positive import MultiPositiveInfoNCELoss
from shopaug.train import TrainConfig
from shopaug.train.grouped import QueryGroup, batch_masks, fit_query_groups


def test_multi_positive_equals_infonce_per_positive() -> None:
    scores = torch.tensor([[0.9, 0.2, 0.5, -0.1]])
    pos = torch.tensor([[True, False, True, False]])
    neg = torch.tensor([[False, True, False, True]])
    got = MultiPositiveInfoNCELoss(temperature=0.1)(scores, positive_mask=pos, negative_mask=neg)
    single = InfoNCELoss(temperature=0.1)
    expected = (
        single(torch.tensor([[0.9, 0.2, -0.1]])) + single(torch.tensor([[0.5, 0.2, -0.1]]))
    ) / 2
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_multi_positive_weights_and_errors() -> None:
    loss = MultiPositiveInfoNCELoss(temperature=1.0)
    scores = torch.tensor([[1.0, 0.0, 0.0]])
    pos = torch.tensor([[True, True, False]])
    neg = torch.tensor([[False, False, True]])
    weighted = loss(
        scores,
        positive_mask=pos,
        negative_mask=neg,
        positive_weights=torch.tensor([[2.0, 0.0, 0.0]]),
    )
    only_first = loss(scores, positive_mask=torch.tensor([[True, False, False]]), negative_mask=neg)
    assert weighted.item() == pytest.approx(only_first.item())
    with pytest.raises(ValueError, match="both a positive and a negative"):
        loss(scores, positive_mask=pos, negative_mask=pos)
    with pytest.raises(ValueError, match="bool tensor"):
        loss(scores, positive_mask=pos.float(), negative_mask=neg)
    # no negatives: every positive is already certain
    assert loss(scores, positive_mask=pos, negative_mask=torch.zeros_like(pos)).item() == 0.0


def test_batch_masks_known_answer() -> None:
    batch = [
        QueryGroup("sofa", ("blue sofa", "red sofa"), ("oak table",), (2.0, 1.0)),
        QueryGroup(
            "table", ("oak table",), ("red sofa", "lamp"), known_positives=frozenset({"lamp"})
        ),
    ]
    items, pos, neg, weights = batch_masks(batch)
    assert items == ["blue sofa", "red sofa", "oak table", "lamp"]
    assert pos.tolist() == [[True, True, False, False], [False, False, True, False]]
    # row 0: oak table (own) and lamp (in-batch); row 1: the sofas, not lamp (a known positive)
    assert neg.tolist() == [[False, False, True, True], [True, True, False, False]]
    assert weights[0].tolist() == [2.0, 1.0, 0.0, 0.0]


def test_query_group_checks() -> None:
    with pytest.raises(ValueError, match="positives"):
        QueryGroup("sofa", ())
    with pytest.raises(ValueError, match="positive_weights"):
        QueryGroup("sofa", ("a", "b"), positive_weights=(1.0,))


class BagOfWordsTowers(nn.Module):
    """A trainable linear query tower over bag-of-words, frozen random item vectors."""

    def __init__(self, vocabulary: list[str], dim: int = 8) -> None:
        super().__init__()
        self.vocabulary = {w: i for i, w in enumerate(vocabulary)}
        generator = torch.Generator().manual_seed(0)
        self.items = torch.randn(len(vocabulary), dim, generator=generator)
        self.query = nn.Linear(len(vocabulary), dim, bias=False)
        self.saved: list[Path] = []

    def _bow(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), len(self.vocabulary))
        for row, text in enumerate(texts):
            for word in text.split():
                out[row, self.vocabulary[word]] += 1
        return out

    def embed_queries(self, texts):  # (n, dim)
        return nn.functional.normalize(self.query(self._bow(list(texts))), dim=-1)

    def embed_items(self, texts):  # (n, dim)
        return nn.functional.normalize(self._bow(list(texts)) @ self.items, dim=-1)

    def encode(self, texts):
        with torch.no_grad():
            return self.embed_queries(texts).numpy()

    def save(self, directory) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.saved.append(Path(directory))


def test_fit_query_groups_learns_and_refreshes(tmp_path: Path) -> None:
    words = [f"w{i}" for i in range(12)]
    model = BagOfWordsTowers(words)
    groups = [QueryGroup(f"w{i}", (f"w{i}",), (f"w{(i + 1) % 12}",)) for i in range(12)]
    accuracy_log: list[float] = []

    def validate(m) -> float:
        queries = m.encode(words)
        with torch.no_grad():
            items = m.embed_items(words).numpy()
        accuracy = float(np.mean((queries @ items.T).argmax(1) == np.arange(12)))
        accuracy_log.append(accuracy)
        return accuracy

    refreshed: list[int] = []

    def refresh(m, epoch):
        refreshed.append(epoch)
        return groups

    config = TrainConfig(batch_size=4, epochs=30, lr=0.05, temperature=0.1, seed=1)
    result = fit_query_groups(
        model,
        groups,
        config,
        run_dir=tmp_path / "run",
        validate=validate,
        refresh=refresh,
        show_progress=False,
    )
    assert result.steps == 30 * 3
    assert refreshed == list(range(1, 30))
    assert accuracy_log[-1] == 1.0 > accuracy_log[0] or accuracy_log[0] == 1.0
    assert result.best_metric == max(accuracy_log)
    assert (tmp_path / "run" / "curve.jsonl").read_text().count("\n") == 30


def test_fit_query_groups_rejects_models_without_towers(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="embed_queries"):
        fit_query_groups(
            nn.Linear(2, 2),
            [QueryGroup("a", ("b",))],
            TrainConfig(),
            run_dir=tmp_path,
            show_progress=False,
        )
