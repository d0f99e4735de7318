"""Federated training (FedAvg in a Flower simulation): the server's weights after a round are
the group-weighted mean of the shops' weights."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest

from shopaug.data import load_dataset
from shopaug.errors import ConfigError, MissingExtraError

pytest.importorskip(
    "flwr.simulation",
    reason="Flower is not installed (pip install 'shopaug[federated]'; not in the dev extra: "
    "flwr pins older fastapi, typer and protobuf than shopaug[serve] uses)",
)


def _shops(per_shop: int) -> list[list]:
    """Two shops of demo training groups (query, judged positive, two fixed negatives)."""
    from shopaug.train import TrainingExample

    dataset = load_dataset("demo")
    positives = dataset.positives(query_ids=[q.id for q in dataset.queries])
    texts = dataset.product_texts(("title",))
    index = dataset.product_index
    groups = []
    for query in dataset.queries:
        for product in sorted(positives.get(query.id, ()))[:1]:
            row = index[product]
            negatives = [texts[(row + 7) % len(texts)], texts[(row + 13) % len(texts)]]
            groups.append(TrainingExample(query.text, texts[row], negatives))
    return [groups[:per_shop], groups[per_shop : 2 * per_shop + 4]]


@pytest.mark.slow
def test_one_round_averages_the_shops_weights(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    from shopaug.models.hashing_model import HashingProjection
    from shopaug.train import TrainConfig, fit
    from shopaug.train.federated import federated_fit

    shops = _shops(12)  # 12 and 16 groups: FedAvg weighs 12/28 and 16/28
    config = TrainConfig(batch_size=4, lr=0.05, seed=3, num_threads=1)
    result = federated_fit(
        partial(HashingProjection, 32),
        shops,
        config,
        rounds=1,
        train_shop=fit,
        work_dir=tmp_path,
    )
    trained = [
        load_file(str(tmp_path / "round-1" / f"shop-{shop}" / "model" / "projection.safetensors"))[
            "weight"
        ]
        for shop in (0, 1)
    ]
    assert not np.allclose(trained[0], trained[1])  # the shops trained on different queries
    assert not np.allclose(trained[0], np.eye(32))
    expected = (12 * trained[0] + 16 * trained[1]) / 28
    np.testing.assert_allclose(result.state["linear.weight"].numpy(), expected, atol=1e-6)
    assert [(r["round"], r["shop"], r["groups"]) for r in result.rounds] == [(1, 0, 12), (1, 1, 16)]


def test_one_shop_is_refused() -> None:
    from shopaug.models.hashing_model import HashingProjection
    from shopaug.train import TrainConfig
    from shopaug.train.federated import federated_fit

    with pytest.raises(ConfigError, match="at least two shops"):
        federated_fit(HashingProjection, _shops(4)[:1], TrainConfig(), rounds=1)


def test_without_flower_the_error_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from shopaug.train.federated import import_flower

    monkeypatch.setitem(sys.modules, "flwr", None)
    monkeypatch.setitem(sys.modules, "flwr.simulation", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'shopaug\[federated\]'"):
        import_flower()
