"""The training loop on a tiny hashed bag-of-words encoder: learns, stops early, checkpoints.

``TinyEncoder``, ``toy_examples`` and ``tiny_config`` are also used by ``test_resume.py``
(and by the subprocess it kills), so they stay importable without fixtures.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import nn

from shopaug.errors import ConfigError
from shopaug.train import (
    StepInfo,
    TrainConfig,
    TrainingExample,
    build_candidates,
    epoch_order,
    fit,
    linear_schedule,
    score_batch,
)


class TinyEncoder(nn.Module):
    """Mean of hashed-token embeddings, with dropout (so exact resume needs the torch RNG)."""

    def __init__(self, *, dim: int = 16, buckets: int = 509, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.buckets = buckets
        self.bag = nn.EmbeddingBag(buckets, dim, mode="mean")
        with torch.no_grad():
            self.bag.weight.copy_(torch.randn(buckets, dim, generator=generator))
        self.dropout = nn.Dropout(0.1)

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        ids: list[int] = []
        offsets: list[int] = []
        for text in texts:
            offsets.append(len(ids))
            ids.extend(zlib.crc32(token.encode()) % self.buckets for token in text.split())
        vectors = self.bag(torch.tensor(ids), torch.tensor(offsets))  # (batch, dim)
        return F.normalize(self.dropout(vectors), dim=-1)

    def save(self, directory: str | Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        save_model(self, str(Path(directory) / "model.safetensors"))


class TinyPairScorer(nn.Module):
    """A cross-encoder stand-in: bilinear score of the two bags."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.encoder = TinyEncoder(seed=seed)
        self.scale = nn.Parameter(torch.tensor(5.0))

    def score_pairs(self, queries: Sequence[str], documents: Sequence[str]) -> torch.Tensor:
        queries_vectors = self.encoder.embed(queries)
        document_vectors = self.encoder.embed(documents)
        return self.scale * (queries_vectors * document_vectors).sum(dim=1)

    def save(self, directory: str | Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        save_model(self, str(Path(directory) / "model.safetensors"))


def toy_examples(count: int = 12) -> list[TrainingExample]:
    """Query ``ask k`` must match ``item k``: disjoint tokens, so the match must be learnt."""
    return [
        TrainingExample(
            query=f"ask{k} please",
            positive=f"item{k} thing",
            negatives=[f"item{(k + 1) % count} thing", f"item{(k + 5) % count} thing"],
        )
        for k in range(count)
    ]


def tiny_config(**overrides: object) -> TrainConfig:
    settings: dict[str, object] = {
        "optimizer": "adamw",
        "lr": 0.05,
        "weight_decay": 0.0,
        "batch_size": 4,
        "epochs": 3,
        "warmup_ratio": 0.1,
        "temperature": 0.1,
        "seed": 7,
    }
    settings.update(overrides)
    return TrainConfig.model_validate(settings)


def ranking_accuracy(model: nn.Module, examples: Sequence[TrainingExample]) -> float:
    """Share of groups whose positive outscores all of its own negatives."""
    batch = build_candidates(examples, in_batch_negatives=False)
    with torch.no_grad():
        scores, mask = score_batch(model, batch)  # type: ignore[arg-type]
    best_negative = scores[:, 1:].masked_fill(~mask[:, 1:], -1e9).max(dim=1).values
    return float((scores[:, 0] > best_negative).float().mean())


# --- pieces ----------------------------------------------------------------------------------


def test_linear_schedule_warms_up_then_decays() -> None:
    factor = linear_schedule(10, 2)
    assert [round(factor(step), 4) for step in (0, 1, 2, 6, 9)] == [0.3333, 0.6667, 1.0, 0.5, 0.125]
    assert linear_schedule(4, 0)(0) == 1.0


def test_epoch_order_is_a_seeded_permutation() -> None:
    first = epoch_order(3, 0, 10)
    assert sorted(first.tolist()) == list(range(10))
    assert first.tolist() == epoch_order(3, 0, 10).tolist()
    assert first.tolist() != epoch_order(3, 1, 10).tolist()


def test_build_candidates_adds_in_batch_negatives_without_copies_of_the_positive() -> None:
    examples = [
        TrainingExample("q0", "p0", ["n0", "p0"]),
        TrainingExample("q1", "p1", ["n0"], weight=2.0),
    ]
    own = build_candidates(examples, in_batch_negatives=False)
    assert own.candidates == [["p0", "n0"], ["p1", "n0"]]
    both = build_candidates(examples, in_batch_negatives=True)
    assert both.candidates == [["p0", "n0", "p1"], ["p1", "n0", "p0"]]
    assert both.weights == [1.0, 2.0]
    assert both.mask().tolist() == [[True, True, True], [True, True, True]]


def test_build_candidates_never_uses_a_positive_of_the_same_query_as_a_negative() -> None:
    examples = [
        TrainingExample("sofa", "blue sofa", ["lamp"]),
        TrainingExample("sofa", "red sofa", ["rug"]),
        TrainingExample("table", "oak table", []),
    ]
    batch = build_candidates(examples, in_batch_negatives=True)
    assert batch.candidates[0] == ["blue sofa", "lamp", "rug", "oak table"]
    assert batch.candidates[1] == ["red sofa", "rug", "lamp", "oak table"]
    assert batch.candidates[2] == ["oak table", "blue sofa", "lamp", "red sofa", "rug"]


def test_score_batch_embedding_and_pair_models_agree_with_direct_computation() -> None:
    model = TinyEncoder().eval()
    batch = build_candidates(
        [TrainingExample("a b", "c", ["d", "e"]), TrainingExample("f", "g", [])],
        in_batch_negatives=False,
    )
    scores, mask = score_batch(model, batch)
    assert mask.tolist() == [[True, True, True], [True, False, False]]
    expected = model.embed(["a b"]) @ model.embed(["c", "d", "e"]).T
    assert torch.allclose(scores[0], expected[0])
    assert scores[1, 1:].tolist() == [0.0, 0.0]

    scorer = TinyPairScorer().eval()
    pair_scores, pair_mask = score_batch(scorer, batch)
    assert torch.equal(pair_mask, mask)
    direct = scorer.score_pairs(["a b", "a b", "a b", "f"], ["c", "d", "e", "g"])
    assert torch.allclose(pair_scores[mask], direct)


def test_training_example_and_config_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="query"):
        TrainingExample("", "p")
    with pytest.raises(ValueError, match="weight"):
        TrainingExample("q", "p", weight=-1.0)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="loss"):
        TrainConfig.model_validate({"loss": "hinge"})
    with pytest.raises(ValueError, match="extra"):
        TrainConfig.model_validate({"learning_rate": 1.0})


def test_fit_rejects_a_model_it_cannot_train(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="embed"):
        fit(nn.Linear(2, 2), toy_examples(), tiny_config(), run_dir=tmp_path)
    with pytest.raises(ValueError, match="empty"):
        fit(TinyEncoder(), [], tiny_config(), run_dir=tmp_path)


# --- the loop --------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["infonce", "bce", "bpr"])
def test_fit_learns_the_toy_task(tmp_path: Path, loss: str) -> None:
    examples = toy_examples()
    model = TinyEncoder(seed=1)
    before = ranking_accuracy(model.eval(), examples)
    config = tiny_config(loss=loss, epochs=15, log_every=3, lambda_div=0.1)
    result = fit(model, examples, config, run_dir=tmp_path, show_progress=False)
    after = ranking_accuracy(model.eval(), examples)
    assert result.steps == 15 * 3
    assert result.curve[-1]["loss"] < 0.7 * result.curve[0]["loss"]
    assert after >= 11 / 12 > before


def test_fit_trains_a_pair_scoring_model(tmp_path: Path) -> None:
    examples = toy_examples()
    model = TinyPairScorer(seed=1)
    before = ranking_accuracy(model.eval(), examples)
    result = fit(model, examples, tiny_config(epochs=15), run_dir=tmp_path, show_progress=False)
    assert ranking_accuracy(model.eval(), examples) > before
    assert result.curve[-1]["loss"] < result.curve[0]["loss"]


def test_validation_drives_best_model_and_early_stopping(tmp_path: Path) -> None:
    values = iter([0.5, 0.6, 0.55, 0.58, 0.9, 0.9])
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def validate(model: nn.Module) -> float:
        assert not model.training
        assert not torch.is_grad_enabled()
        value = next(values)
        snapshots[len(snapshots) + 1] = {k: v.clone() for k, v in model.state_dict().items()}
        return value

    config = tiny_config(epochs=10, eval_every=1, early_stopping_patience=2)
    result = fit(
        TinyEncoder(),
        toy_examples(),
        config,
        run_dir=tmp_path,
        validate=validate,
        show_progress=False,
    )
    assert result.stopped_early
    assert result.steps == 4  # 0.55 and 0.58 do not beat 0.6
    assert result.best_metric == 0.6
    assert result.best_step == 2
    assert [point["val_ndcg@10"] for point in result.curve] == [0.5, 0.6, 0.55, 0.58]
    saved = TinyEncoder(seed=99)
    load_model(saved, str(tmp_path / "model" / "model.safetensors"))
    for name, tensor in saved.state_dict().items():
        assert torch.equal(tensor, snapshots[2][name]), name
    assert not torch.equal(saved.bag.weight, snapshots[4]["bag.weight"])


def test_checkpoints_logs_and_curve_files(tmp_path: Path) -> None:
    config = tiny_config(epochs=2, checkpoint_every=2, keep_checkpoints=2, log_every=2)
    seen: list[StepInfo] = []
    result = fit(
        TinyEncoder(),
        toy_examples(),
        config,
        run_dir=tmp_path,
        on_step=seen.append,
        show_progress=False,
    )
    assert result.steps == 6
    assert [info.step for info in seen] == [1, 2, 3, 4, 5, 6]
    assert [info.checkpoint is not None for info in seen] == [False, True, False, True, False, True]
    checkpoints = sorted(path.name for path in (tmp_path / "checkpoints").iterdir())
    assert checkpoints == ["step-00000004", "step-00000006"]
    final = tmp_path / "checkpoints" / "step-00000006"
    assert result.checkpoint_path == final
    assert sorted(path.name for path in final.iterdir()) == [
        "model.safetensors",
        "optimizer.safetensors",
        "rng.safetensors",
        "state.json",
    ]
    state = json.loads((final / "state.json").read_text())
    assert state["step"] == 6 and state["loop"]["epoch"] == 2 and state["loop"]["finished"]
    assert "exp_avg" in (final / "optimizer.safetensors").read_bytes().decode("latin-1")
    assert (tmp_path / "model" / "model.safetensors").is_file()
    curve = [json.loads(line) for line in (tmp_path / "curve.jsonl").read_text().splitlines()]
    assert curve == result.curve
    assert [point["step"] for point in curve] == [2, 4, 6]
    assert any((tmp_path / "tb").iterdir())
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.bin"))


def test_resuming_a_finished_run_returns_its_result(tmp_path: Path) -> None:
    first = fit(TinyEncoder(), toy_examples(), tiny_config(), run_dir=tmp_path, show_progress=False)
    again = fit(
        TinyEncoder(seed=5), toy_examples(), tiny_config(), run_dir=tmp_path, show_progress=False
    )
    assert again.steps == first.steps and again.curve == first.curve


def test_resume_refuses_another_config_or_other_data(tmp_path: Path) -> None:
    fit(TinyEncoder(), toy_examples(), tiny_config(), run_dir=tmp_path, show_progress=False)
    with pytest.raises(ConfigError, match=r"lr: 0\.05 -> 0\.1"):
        fit(TinyEncoder(), toy_examples(), tiny_config(lr=0.1), run_dir=tmp_path)
    with pytest.raises(ConfigError, match="other training examples"):
        fit(TinyEncoder(), toy_examples(8), tiny_config(), run_dir=tmp_path)
    restarted = fit(
        TinyEncoder(),
        toy_examples(8),
        tiny_config(lr=0.1),
        run_dir=tmp_path,
        resume=False,
        show_progress=False,
    )
    assert restarted.steps == 6
