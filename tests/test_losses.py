"""Losses: a conformance suite over every loss, hand-computed values, library cross-checks."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from shopaug.losses import (
    LOSSES,
    BCELoss,
    BPRLoss,
    DiversityLoss,
    InfoNCELoss,
    TotalLoss,
)

ALL_LOSSES = sorted(LOSSES)


def _scores() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(4, 5, generator=generator, dtype=torch.float64)


# --- conformance: every loss in the registry -------------------------------------------------


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_every_loss_is_a_finite_scalar_with_finite_gradients(name: str) -> None:
    scores = _scores().requires_grad_(True)
    loss = LOSSES[name](temperature=0.5)(scores)
    assert loss.shape == ()
    assert torch.isfinite(loss)
    loss.backward()
    assert scores.grad is not None
    assert torch.isfinite(scores.grad).all()
    assert scores.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_every_loss_falls_when_the_positive_rises(name: str) -> None:
    loss_fn = LOSSES[name]()
    base = _scores()
    values = []
    for lift in (-2.0, 0.0, 2.0, 4.0):
        scores = base.clone()
        scores[:, 0] += lift
        values.append(loss_fn(scores).item())
    assert all(a > b for a, b in itertools.pairwise(values)), values
    gradient_scores = base.clone().requires_grad_(True)
    loss_fn(gradient_scores).backward()
    assert gradient_scores.grad is not None
    assert (gradient_scores.grad[:, 0] < 0).all()  # raising the positive lowers the loss
    assert (gradient_scores.grad[:, 1:] > 0).all()  # raising a negative raises it


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_every_loss_rejects_wrong_shapes(name: str) -> None:
    loss_fn = LOSSES[name]()
    with pytest.raises(ValueError, match="scores must have shape"):
        loss_fn(torch.zeros(5))
    with pytest.raises(ValueError, match="weights must have shape"):
        loss_fn(torch.zeros(2, 3), weights=torch.ones(3))
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        loss_fn(torch.zeros(2, 3), mask=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="positive column"):
        loss_fn(torch.zeros(2, 3), mask=torch.tensor([[True, True, True], [False, True, True]]))
    with pytest.raises(ValueError, match="temperature"):
        LOSSES[name](temperature=0.0)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_every_loss_ignores_masked_columns(name: str) -> None:
    loss_fn = LOSSES[name]()
    short = torch.tensor([[1.0, 0.5], [0.2, -0.3]])
    padded = torch.tensor([[1.0, 0.5, 99.0], [0.2, -0.3, -99.0]])
    mask = torch.tensor([[True, True, False], [True, True, False]])
    assert torch.allclose(loss_fn(padded, mask=mask), loss_fn(short))


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_every_loss_weights_rows(name: str) -> None:
    loss_fn = LOSSES[name]()
    scores = _scores()
    only_first = loss_fn(scores, weights=torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64))
    assert torch.allclose(only_first, loss_fn(scores[:1]))
    doubled = loss_fn(scores, weights=torch.full((4,), 2.0, dtype=torch.float64))
    assert torch.allclose(doubled, loss_fn(scores))


# --- hand-computed values --------------------------------------------------------------------


def test_bce_hand_value() -> None:
    # softplus(-2) + softplus(-1) + log 2, over 3 columns
    expected = (math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)) + math.log(2)) / 3
    assert BCELoss()(torch.tensor([[2.0, -1.0, 0.0]])).item() == pytest.approx(expected, rel=1e-6)


def test_infonce_hand_value_with_temperature() -> None:
    # logits [1, 0, -1] (scores / 0.5): -log(e / (e + 1 + 1/e))
    expected = -math.log(math.e / (math.e + 1 + math.exp(-1)))
    loss = InfoNCELoss(temperature=0.5)(torch.tensor([[0.5, 0.0, -0.5]]))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_infonce_log_q_is_subtracted_from_logits() -> None:
    scores = torch.tensor([[1.0, 1.0]])
    # candidate 1 was sampled with probability 1, candidate 0 with e^-1: logits [2, 1]
    log_q = torch.tensor([-1.0, 0.0])
    expected = -math.log(math.exp(2) / (math.exp(2) + math.exp(1)))
    loss = InfoNCELoss(temperature=1.0)(scores, log_q=log_q)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="log_q"):
        InfoNCELoss()(scores, log_q=torch.zeros(3))


def test_bpr_hand_value() -> None:
    # pairs (2 - 1) and (2 - 3): mean of softplus(-1) and softplus(1)
    expected = (math.log1p(math.exp(-1)) + math.log1p(math.exp(1))) / 2
    assert BPRLoss()(torch.tensor([[2.0, 1.0, 3.0]])).item() == pytest.approx(expected, rel=1e-6)


def test_bpr_needs_a_negative() -> None:
    with pytest.raises(ValueError, match="at least 2 column"):
        BPRLoss()(torch.zeros(3, 1))


def test_diversity_hand_value() -> None:
    loss_fn = DiversityLoss(eps=0.1)
    margin = math.log(9.0)
    # positive score 1 -> z = 1; negative score 2 -> z = -2
    expected = (math.log1p(math.exp(margin - 1)) + math.log1p(math.exp(margin + 2))) / 2
    assert loss_fn(torch.tensor([[1.0, 2.0]])).item() == pytest.approx(expected, rel=1e-6)


def test_diversity_matches_the_article_term_gradient_far_below_the_margin() -> None:
    """Where the model is unsure, the bounded form has the gradient of -mean(log(p/(1-p)))."""
    scores = torch.tensor([[-3.0, 2.0, 1.5]], dtype=torch.float64, requires_grad=True)
    DiversityLoss(eps=1e-6)(scores).backward()
    article = scores.detach().clone().requires_grad_(True)
    p = torch.sigmoid(article)
    r = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    p_correct = p * r + (1 - p) * (1 - r)
    (-torch.log(p_correct / (1 - p_correct)).mean()).backward()
    assert scores.grad is not None and article.grad is not None
    assert torch.allclose(scores.grad, article.grad, atol=1e-4)


def test_diversity_explicit_targets() -> None:
    scores = torch.tensor([[1.0, 2.0]])
    swapped = DiversityLoss()(scores, targets=torch.tensor([[0.0, 1.0]]))
    assert swapped.item() == pytest.approx(DiversityLoss()(torch.tensor([[2.0, 1.0]])).item())
    with pytest.raises(ValueError, match="0 or 1"):
        DiversityLoss()(scores, targets=torch.tensor([[0.5, 1.0]]))


@pytest.mark.parametrize("extreme", [1e4, -1e4])
def test_diversity_is_finite_at_p_zero_and_one(extreme: float) -> None:
    scores = torch.tensor([[extreme, -extreme], [0.0, 0.0]], requires_grad=True)
    loss = DiversityLoss()(scores)
    assert torch.isfinite(loss)
    assert loss.item() >= 0.0
    loss.backward()
    assert scores.grad is not None
    assert torch.isfinite(scores.grad).all()


def test_diversity_is_bounded_below_by_zero() -> None:
    confident = torch.tensor([[1e4, -1e4]])
    assert DiversityLoss()(confident).item() == pytest.approx(0.0, abs=1e-6)


# --- cross-checks against torch's own functions ----------------------------------------------


def test_infonce_equals_torch_cross_entropy() -> None:
    scores = _scores()
    expected = F.cross_entropy(scores / 0.05, torch.zeros(4, dtype=torch.long))
    assert torch.allclose(InfoNCELoss(temperature=0.05)(scores), expected)


def test_bce_equals_torch_bce_with_logits() -> None:
    scores = _scores()
    targets = torch.zeros_like(scores)
    targets[:, 0] = 1
    expected = F.binary_cross_entropy_with_logits(scores, targets)
    assert torch.allclose(BCELoss()(scores), expected)


# --- total -----------------------------------------------------------------------------------


def test_total_loss_adds_weighted_diversity() -> None:
    scores = _scores()
    rec, div = InfoNCELoss(), DiversityLoss()
    assert torch.equal(TotalLoss(rec, div)(scores), rec(scores))
    combined = TotalLoss(rec, div, lam=0.3)(scores)
    assert torch.allclose(combined, rec(scores) + 0.3 * div(scores))
    with pytest.raises(ValueError, match="lam"):
        TotalLoss(rec, div, lam=-1.0)
    with pytest.raises(ValueError, match="div_loss"):
        TotalLoss(rec, None, lam=1.0)
