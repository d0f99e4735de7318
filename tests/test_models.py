"""Models: weights fingerprint, errors, and (slow) the real MiniLM bi-encoder and reranker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from shopaug.encoders.base import Encoder
from shopaug.encoders.dense import minilm_path, model_id
from shopaug.models.fingerprint import WeightsFingerprint
from shopaug.train import TrainConfig, TrainingExample, build_candidates, fit, score_batch

COLORS = ["red", "blue", "green", "black", "white"]
ITEMS = ["sofa", "lamp", "rug", "desk"]


def toy_catalog_examples() -> list[TrainingExample]:
    """20 groups: "<color> <item>" must find "<item> in <color>" over near misses."""
    examples = []
    for c, color in enumerate(COLORS):
        for i, item in enumerate(ITEMS):
            other_color = COLORS[(c + 1) % len(COLORS)]
            other_item = ITEMS[(i + 1) % len(ITEMS)]
            examples.append(
                TrainingExample(
                    query=f"{color} {item}",
                    positive=f"{item} in {color}",
                    negatives=[f"{item} in {other_color}", f"{other_item} in {color}"],
                )
            )
    return examples


def mean_margin(model: nn.Module, examples: list[TrainingExample]) -> float:
    """Mean over groups of score(positive) - max score(own negatives), in eval mode."""
    model.eval()
    batch = build_candidates(examples, in_batch_negatives=False)
    with torch.no_grad():
        scores, _ = score_batch(model, batch)  # type: ignore[arg-type]
    return float((scores[:, 0] - scores[:, 1:].max(dim=1).values).mean())


def test_fingerprint_changes_only_when_weights_change() -> None:
    torch.manual_seed(0)
    module = nn.Linear(3, 2)
    fingerprint = WeightsFingerprint(module)
    first = fingerprint()
    assert len(first) == 16 and first == fingerprint()
    original = module.weight[0, 0].item()
    with torch.no_grad():
        module.weight[0, 0] = original + 1.0
    changed = fingerprint()
    assert changed != first
    with torch.no_grad():
        module.weight[0, 0] = original
    assert fingerprint() == first  # same values, same id
    other = nn.Linear(3, 2)
    other.load_state_dict(module.state_dict())
    assert WeightsFingerprint(other)() == first


def test_missing_model_folders_are_named(tmp_path: Path) -> None:
    from shopaug.models import BiEncoder, CrossEncoderReranker

    with pytest.raises(FileNotFoundError, match="nowhere"):
        BiEncoder(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        CrossEncoderReranker(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"reranker\.json"):
        CrossEncoderReranker.load(tmp_path / "empty")


@pytest.mark.slow
def test_bi_encoder_fine_tunes_and_round_trips(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from shopaug.models import BiEncoder

    examples = toy_catalog_examples()
    model = BiEncoder()
    assert isinstance(model, Encoder)
    assert model.dim == 384
    start_id = model.id
    assert start_id == model_id(minilm_path())  # the one id of these weights
    texts = ["red sofa", "sofa in red", "desk in white"]
    vectors = model.encode(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(model.embed(texts).detach().numpy(), vectors, atol=1e-5)
    margin_before = mean_margin(model, examples)

    config = TrainConfig(lr=1e-4, batch_size=10, epochs=2, warmup_ratio=0.0, seed=0)
    result = fit(model, examples, config, run_dir=tmp_path / "run", show_progress=False)
    assert result.steps == 4
    assert mean_margin(model, examples) > margin_before + 0.01
    assert model.id != start_id

    saved = result.model_dir
    assert (saved / "model.safetensors").is_file()
    assert not list(saved.rglob("*.bin")) and not list(saved.rglob("*.pt"))
    trained = model.encode(texts)
    reloaded = BiEncoder.load(saved)
    assert np.allclose(reloaded.encode(texts), trained, atol=1e-6)
    assert reloaded.id == model.id == model_id(saved)  # saved weights: the folder's id
    plain = SentenceTransformer(str(saved), device="cpu")
    assert np.allclose(plain.encode(texts, normalize_embeddings=True), trained, atol=1e-5)


@pytest.mark.slow
def test_cross_encoder_reranks_trains_and_round_trips(tmp_path: Path) -> None:
    from shopaug.models import CrossEncoderReranker

    examples = toy_catalog_examples()[:12]
    model = CrossEncoderReranker(seed=0)
    candidates = [("p1", "sofa in red"), ("p2", "lamp in blue"), ("p3", "rug in green")]
    scores = model.score([("red sofa", text) for _, text in candidates])
    assert scores.shape == (3,) and scores.dtype == np.float32
    ranked = model.rerank("red sofa", candidates, top_k=2)
    expected_order = [candidates[i][0] for i in np.argsort(-scores, kind="stable")[:2]]
    assert [product for product, _ in ranked] == expected_order
    assert [score for _, score in ranked] == sorted(scores.tolist(), reverse=True)[:2]
    assert CrossEncoderReranker(seed=0).id == model.id  # the head init is seeded

    margin_before = mean_margin(model, examples)
    config = TrainConfig(
        lr=1e-4,
        batch_size=6,
        epochs=2,
        warmup_ratio=0.0,
        temperature=1.0,
        in_batch_negatives=False,
        seed=0,
    )
    result = fit(model, examples, config, run_dir=tmp_path / "run", show_progress=False)
    assert result.steps == 4
    assert mean_margin(model, examples) > margin_before

    reloaded = CrossEncoderReranker.load(result.model_dir)
    pairs = [("red sofa", text) for _, text in candidates]
    assert np.allclose(reloaded.score(pairs), model.score(pairs), atol=1e-6)
    assert reloaded.id == model.id
    assert (result.model_dir / "head.safetensors").is_file()


# --- LoRA ------------------------------------------------------------------------------------


class TinyAttention(nn.Module):
    """Linear layers named like BERT's attention, so LoRA's default targets match."""

    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Linear(4, 4)
        self.value = nn.Linear(4, 4)
        self.output = nn.Linear(4, 2)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.output(self.query(inputs) + self.value(inputs))


def test_lora_trains_only_adapters_and_merges_to_the_same_function() -> None:
    pytest.importorskip("peft")
    from shopaug.models.lora import LoraSettings, has_lora, inject_lora, merged_copy

    torch.manual_seed(0)
    module = TinyAttention()
    inputs = torch.randn(3, 4)
    before = module(inputs)
    trainable = inject_lora(module, LoraSettings(r=2, dropout=0.0))
    assert trainable == 2 * (2 * 4 + 4 * 2)  # A (2x4) and B (4x2) for query and value
    assert sorted(n for n, p in module.named_parameters() if p.requires_grad) == [
        "query.lora_A.default.weight",
        "query.lora_B.default.weight",
        "value.lora_A.default.weight",
        "value.lora_B.default.weight",
    ]
    assert torch.allclose(module(inputs), before)  # B starts at zero
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if "lora_B" in name:
                parameter.fill_(0.5)
    adapted = module(inputs)
    assert not torch.allclose(adapted, before)
    merged = merged_copy(module)
    assert not has_lora(merged) and has_lora(module)
    assert sorted(merged.state_dict()) == sorted(TinyAttention().state_dict())
    assert torch.allclose(merged(inputs), adapted, atol=1e-6)
    with pytest.raises(ValueError, match="target_modules"):
        inject_lora(TinyAttention(), LoraSettings(target_modules=("key",)))


def test_lora_without_peft_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from shopaug.errors import MissingExtraError
    from shopaug.models.lora import LoraSettings, inject_lora

    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'shopaug\[train\]'"):
        inject_lora(TinyAttention(), LoraSettings())


@pytest.mark.slow
def test_bi_encoder_with_lora_trains_adapters_and_saves_merged(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from shopaug.models import BiEncoder, LoraSettings

    model = BiEncoder(lora=LoraSettings(r=4))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < trainable < 0.02 * sum(p.numel() for p in model.parameters())
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    config = TrainConfig(lr=1e-3, batch_size=10, epochs=1, warmup_ratio=0.0, seed=0)
    result = fit(model, toy_catalog_examples(), config, run_dir=tmp_path, show_progress=False)
    assert result.steps == 2
    for name, parameter in model.named_parameters():
        if name in frozen:
            assert torch.equal(parameter, frozen[name]), name
    texts = ["red sofa", "lamp in blue"]
    reloaded = BiEncoder.load(result.model_dir)  # plain weights: no peft needed to read them
    assert not any("lora" in name for name, _ in reloaded.named_parameters())
    assert np.allclose(reloaded.encode(texts), model.encode(texts), atol=1e-5)
    assert not np.allclose(BiEncoder().encode(texts), model.encode(texts), atol=1e-4)  # it learnt
