"""``fit(..., negative_sampling=...)``: sampled negatives per group, exact resume, logQ columns."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_model
from torch import nn

from shopaug.errors import ConfigError
from shopaug.samplers import (
    Exclusions,
    NegativeSample,
    NegativeSampler,
    SamplerConfig,
    build_sampler,
)
from shopaug.train import NegativeSampling, StepInfo, TrainingExample, fit
from test_train import TinyEncoder, tiny_config, toy_examples

#: the 12 toy positives ``item{k} thing`` and 8 items no group uses
CATALOG = [f"item{k} thing" for k in range(20)]
COUNTS = np.arange(1, 21, dtype=np.float64)


class Interrupted(Exception):
    """Raised from ``on_step`` to stop a run the way a crash would."""


class RecordingSampler:
    """Delegates to a real sampler and keeps every (positive_rows, items) it returned."""

    def __init__(self, inner: NegativeSampler) -> None:
        self.inner = inner
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    @property
    def n_items(self) -> int:
        return self.inner.n_items

    def sample(
        self,
        *,
        query_rows: np.ndarray,
        positive_rows: np.ndarray,
        n: int,
        rng: np.random.Generator,
        exclude: Exclusions | None = None,
    ) -> NegativeSample:
        out = self.inner.sample(
            query_rows=query_rows, positive_rows=positive_rows, n=n, rng=rng, exclude=exclude
        )
        self.calls.append((positive_rows.copy(), out.items.copy()))
        return out


def _sampler(name: str) -> NegativeSampler:
    return build_sampler(SamplerConfig(name=name, alpha=0.75), n_items=len(CATALOG), counts=COUNTS)


def _sampling(name: str, *, n: int = 3, log_q: bool = False) -> NegativeSampling:
    return NegativeSampling(
        catalog=CATALOG, sampler=RecordingSampler(_sampler(name)), n=n, log_q_correction=log_q
    )


def _fit(
    run_dir: Path,
    sampling: NegativeSampling,
    *,
    model_seed: int = 0,
    stop_at: int | None = None,
) -> TinyEncoder:
    model = TinyEncoder(seed=model_seed)

    def on_step(info: StepInfo) -> None:
        if stop_at is not None and info.step == stop_at:
            raise Interrupted

    fit(
        model,
        toy_examples(),
        tiny_config(checkpoint_every=2, grad_clip=0.5),  # 3 steps an epoch, 9 steps
        run_dir=run_dir,
        on_step=on_step,
        show_progress=False,
        negative_sampling=sampling,
    )
    return model


def _same_weights(model_a: nn.Module, model_b: nn.Module) -> bool:
    return all(
        torch.equal(a, b)
        for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values(), strict=True)
    )


# --- drawing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["uniform", "popularity"])
def test_draw_appends_n_negatives_that_are_never_the_positive(name: str) -> None:
    sampling = NegativeSampling(catalog=CATALOG, sampler=_sampler(name), n=5)
    batch = toy_examples()[:4]
    for step in range(1, 30):
        sampled = sampling.draw(batch, seed=7, step=step)
        assert sampled.items.shape == (4, 5)
        assert sampled.log_q is None
        for example, items, extended in zip(batch, sampled.items, sampled.examples, strict=True):
            texts = [CATALOG[item] for item in items]
            assert example.positive not in texts
            assert extended.negatives == [*example.negatives, *texts]
            assert (extended.query, extended.positive) == (example.query, example.positive)


def test_draw_depends_on_seed_and_step_only() -> None:
    sampling = NegativeSampling(catalog=CATALOG, sampler=_sampler("uniform"), n=4)
    batch = toy_examples()[:4]
    first = sampling.draw(batch, seed=7, step=3).items
    assert np.array_equal(first, sampling.draw(batch, seed=7, step=3).items)
    assert not np.array_equal(first, sampling.draw(batch, seed=7, step=4).items)
    assert not np.array_equal(first, sampling.draw(batch, seed=8, step=3).items)


def test_a_positive_outside_the_catalog_still_gets_n_negatives() -> None:
    sampling = NegativeSampling(catalog=CATALOG, sampler=_sampler("uniform"), n=6)
    batch = [TrainingExample(query="ask", positive="not in the catalog")]
    sampled = sampling.draw(batch, seed=0, step=1)
    assert sampled.items.shape == (1, 6)
    assert sampled.examples[0].negatives == [CATALOG[item] for item in sampled.items[0]]


def test_log_q_is_kept_for_sampled_texts_only() -> None:
    # popularity over counts 1..20, smoothing 1: log_q = log((count + 1) ** 0.75 / sum)
    sampling = NegativeSampling(
        catalog=CATALOG, sampler=_sampler("popularity"), n=4, log_q_correction=True
    )
    batch = [TrainingExample(query="ask", positive=CATALOG[0], negatives=[CATALOG[19]])]
    sampled = sampling.draw(batch, seed=1, step=1)
    assert sampled.log_q is not None
    weights = (COUNTS + 1) ** 0.75
    expected = {
        CATALOG[item]: math.log(weights[item] / weights.sum())
        for item in sampled.items[0]
        if item != 19  # an own negative keeps log_q 0
    }
    assert sampled.log_q[0] == pytest.approx(expected)


def test_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="n_items=len"):
        NegativeSampling(catalog=CATALOG[:5], sampler=_sampler("uniform"), n=2)
    with pytest.raises(ConfigError, match=r"NegativeSampling\.n "):
        NegativeSampling(catalog=CATALOG, sampler=_sampler("uniform"), n=0)
    sampling = NegativeSampling(
        catalog=CATALOG, sampler=_sampler("uniform"), n=2, log_q_correction=True
    )
    with pytest.raises(ConfigError, match=r"TrainConfig\.loss"):
        fit(
            TinyEncoder(),
            toy_examples(),
            tiny_config(loss="bpr"),
            run_dir=tmp_path / "run",
            show_progress=False,
            negative_sampling=sampling,
        )
    assert not (tmp_path / "run").exists()  # refused before anything is written


# --- fit -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["uniform", "popularity"])
def test_fit_draws_n_negatives_per_group_every_step(tmp_path: Path, name: str) -> None:
    sampling = _sampling(name, n=3, log_q=True)
    model = _fit(tmp_path / "run", sampling)
    recorder = sampling.sampler
    assert isinstance(recorder, RecordingSampler)
    assert len(recorder.calls) == 9  # one draw per step
    positives = {example.positive for example in toy_examples()}
    for positive_rows, items in recorder.calls:
        assert items.shape == (4, 3)
        assert {CATALOG[row] for row in positive_rows} <= positives
        assert not (items == positive_rows[:, None]).any()

    again = _fit(tmp_path / "again", _sampling(name, n=3, log_q=True))
    assert _same_weights(model, again)  # same seed, same draws, same weights
    plain = TinyEncoder()
    fit(plain, toy_examples(), tiny_config(checkpoint_every=2, grad_clip=0.5),
        run_dir=tmp_path / "plain", show_progress=False)  # fmt: skip
    assert not _same_weights(model, plain)  # the sampled negatives were trained on


@pytest.mark.parametrize("name", ["uniform", "popularity"])
def test_stopped_and_resumed_run_with_sampling_matches_uninterrupted(
    tmp_path: Path, name: str
) -> None:
    uninterrupted = _fit(tmp_path / "a", _sampling(name, log_q=True))
    with pytest.raises(Interrupted):
        _fit(tmp_path / "b", _sampling(name, log_q=True), stop_at=5)  # checkpoint at step 4
    resumed = _fit(tmp_path / "b", _sampling(name, log_q=True), model_seed=123)
    assert _same_weights(uninterrupted, resumed)
    assert (tmp_path / "b" / "curve.jsonl").read_text() == (
        tmp_path / "a" / "curve.jsonl"
    ).read_text()


def test_resume_with_other_sampling_is_refused(tmp_path: Path) -> None:
    def sampling(name: str) -> NegativeSampling:
        return NegativeSampling(catalog=CATALOG, sampler=_sampler(name), n=3)

    with pytest.raises(Interrupted):
        _fit(tmp_path / "run", sampling("uniform"), stop_at=3)  # checkpoint at step 2
    with pytest.raises(ConfigError, match="other training examples"):
        _fit(tmp_path / "run", sampling("popularity"))
    _fit(tmp_path / "run", sampling("uniform"))  # the same sampling resumes


# --- the logQ correction on a hand-computed case ---------------------------------------------


class FixedEncoder(nn.Module):
    """Fixed 2-d vectors per text times one trainable scale (1 at the first step)."""

    VECTORS: ClassVar[dict[str, list[float]]] = {
        "q": [1.0, 0.0],
        "pos": [0.8, 0.6],
        "a": [0.0, 1.0],
        "b": [0.6, 0.8],
    }

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        return self.scale * torch.tensor([self.VECTORS[text] for text in texts])

    def save(self, directory: str | Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        save_model(self, str(Path(directory) / "model.safetensors"))


@pytest.mark.parametrize("log_q_correction", [False, True])
def test_log_q_column_changes_the_first_loss_as_the_formula_says(
    tmp_path: Path, log_q_correction: bool
) -> None:
    # counts 1, 0, 1 with alpha 1 and no smoothing: excluding "pos", only "b" can be drawn,
    # and its proposal probability is q(b) = 1 / 2
    sampler = build_sampler(
        SamplerConfig(name="popularity", alpha=1.0, smoothing=0.0),
        n_items=3,
        counts=np.array([1.0, 0.0, 1.0]),
    )
    sampling = NegativeSampling(
        catalog=["pos", "a", "b"], sampler=sampler, n=1, log_q_correction=log_q_correction
    )
    losses: list[float] = []
    fit(
        FixedEncoder(),
        [TrainingExample(query="q", positive="pos", negatives=["a"])],
        tiny_config(batch_size=1, epochs=1, temperature=0.5, loss="infonce"),
        run_dir=tmp_path,
        on_step=lambda info: losses.append(info.loss),
        show_progress=False,
        negative_sampling=sampling,
    )
    # scores q.pos = 0.8, q.a = 0, q.b = 0.6; columns [pos, a (own), b (sampled)]
    logits = torch.tensor([0.8, 0.0, 0.6], dtype=torch.float64) / 0.5
    if log_q_correction:
        logits[2] -= math.log(0.5)  # only the sampled column is corrected
    expected = -F.log_softmax(logits, dim=0)[0].item()
    assert losses[0] == pytest.approx(expected, rel=1e-6)
    plain = -F.log_softmax(torch.tensor([1.6, 0.0, 1.2], dtype=torch.float64), dim=0)[0].item()
    assert (losses[0] > plain + 0.1) is log_q_correction
