"""Negative samplers: one conformance suite over every sampler, then known-answer checks each."""

from __future__ import annotations

import doctest
import importlib
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from shopaug.errors import ConfigError, DataError
from shopaug.samplers import (
    SAMPLERS,
    DynamicSampler,
    HardPoolSampler,
    InBatchSampler,
    MixedSampler,
    NegativeSample,
    NegativeSampler,
    PopularitySampler,
    SamplerConfig,
    SamplingError,
    Scorer,
    UniformSampler,
    build_sampler,
    pool_from_samples,
)
from shopaug.samplers.draws import Categorical

N_ITEMS = 40
COUNTS = (np.arange(N_ITEMS) * 37) % 11  # 0..10, some zeros
QUERY_ROWS = np.array([100, 101, 102, 103, 104, 105, 106, 107])
POSITIVE_ROWS = np.array([0, 3, 5, 9, 12, 20, 27, 33])
# Row 0 also excludes row 1's positive (3): in-batch still has 6 candidates for it.
EXCLUDE = [{1, 2, 3}, {4}, set(), {10, 11, 39}, set(), {21}, set(), {34, 35}]
N = 4
POOL = {
    100: np.array([30, 31, 32, 33, 34, 35]),  # long enough
    101: np.array([3, 4, 36]),  # holds its positive (3) and an excluded item (4): 1 left
    103: np.array([10, 11, 12, 13, 14, 15, 16]),
}


def scores_for(query_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
    """Known scores: query row q prefers item (7 * q) % N_ITEMS, less so the farther an item is."""
    centers = (7 * query_rows[:, None]) % N_ITEMS
    return -np.abs(centers - item_rows[None, :]).astype(np.float64) / 4.0


class CountingScorer:
    """A fake :class:`Scorer` that records every call."""

    def __init__(self, n_items: int = N_ITEMS) -> None:
        self.n_items = n_items
        self.calls: list[tuple[np.ndarray, np.ndarray | None]] = []

    def score(self, query_rows: np.ndarray, item_rows: np.ndarray | None) -> np.ndarray:
        self.calls.append((query_rows.copy(), None if item_rows is None else item_rows.copy()))
        items = np.arange(self.n_items) if item_rows is None else item_rows
        return scores_for(query_rows, items)


FACTORIES: dict[str, Callable[[], NegativeSampler]] = {
    "uniform": lambda: UniformSampler(N_ITEMS),
    "uniform-no-replace": lambda: UniformSampler(N_ITEMS, replace=False),
    "popularity": lambda: PopularitySampler(COUNTS, 0.75),
    "popularity-no-replace": lambda: PopularitySampler(COUNTS, 1.0, smoothing=0.0, replace=False),
    "in_batch": lambda: InBatchSampler(N_ITEMS, counts=COUNTS),
    "in_batch-no-counts": lambda: InBatchSampler(N_ITEMS),
    "mixed": lambda: MixedSampler(
        InBatchSampler(N_ITEMS, counts=COUNTS), UniformSampler(N_ITEMS), 2
    ),
    "mixed-popularity": lambda: MixedSampler(
        InBatchSampler(N_ITEMS, counts=COUNTS), PopularitySampler(COUNTS), 1
    ),
    "hard_pool": lambda: HardPoolSampler(POOL, UniformSampler(N_ITEMS)),
    "dynamic": lambda: DynamicSampler(CountingScorer(), N_ITEMS, refresh_every=2),
    "dynamic-candidates": lambda: DynamicSampler(
        CountingScorer(), N_ITEMS, temperature=0.5, candidates=20
    ),
    "dynamic-no-replace": lambda: DynamicSampler(CountingScorer(), N_ITEMS, replace=False),
}

every_sampler = pytest.mark.parametrize("make", FACTORIES.values(), ids=list(FACTORIES))


def draw(
    sampler: NegativeSampler,
    seed: int,
    *,
    positive_rows: np.ndarray = POSITIVE_ROWS,
    exclude: list[set[int]] | None = EXCLUDE,
    n: int = N,
) -> NegativeSample:
    return sampler.sample(
        query_rows=QUERY_ROWS[: len(positive_rows)],
        positive_rows=positive_rows,
        n=n,
        rng=np.random.default_rng(seed),
        exclude=exclude,
    )


def expected_counts(q: np.ndarray, positive_rows: np.ndarray, n: int) -> np.ndarray:
    """Expected draws per item when each row draws ``n`` times from q conditioned on j != pos."""
    expected = np.zeros_like(q)
    for positive in positive_rows:
        conditional = q.copy()
        conditional[positive] = 0.0
        expected += n * conditional / conditional.sum()
    return expected


def assert_matches(observed: np.ndarray, expected: np.ndarray) -> None:
    """Chi-square goodness of fit on the items expected to appear; none of the others appear."""
    support = expected > 0
    assert observed[~support].sum() == 0
    assert chisquare(observed[support], expected[support]).pvalue > 1e-3


# --- conformance: every sampler ------------------------------------------------------------


def test_every_registered_sampler_is_in_the_conformance_suite() -> None:
    assert {type(make()) for make in FACTORIES.values()} == set(SAMPLERS.values())


@every_sampler
def test_satisfies_the_protocol(make: Callable[[], NegativeSampler]) -> None:
    sampler = make()
    assert isinstance(sampler, NegativeSampler)
    assert sampler.n_items == N_ITEMS


@every_sampler
def test_shape_dtype_range_and_finite_log_q(make: Callable[[], NegativeSampler]) -> None:
    out = draw(make(), seed=0)
    assert out.items.shape == (len(POSITIVE_ROWS), N)
    assert out.items.dtype == np.int64
    assert out.log_q.shape == out.items.shape
    assert out.log_q.dtype == np.float64
    assert ((out.items >= 0) & (out.items < N_ITEMS)).all()
    assert np.isfinite(out.log_q).all()


@every_sampler
def test_never_returns_a_positive_or_an_excluded_item(make: Callable[[], NegativeSampler]) -> None:
    sampler = make()
    for seed in range(25):
        out = draw(sampler, seed)
        for row, items in enumerate(out.items.tolist()):
            forbidden = {int(POSITIVE_ROWS[row])} | EXCLUDE[row]
            assert not forbidden & set(items), (row, items)


@every_sampler
def test_never_returns_a_positive_when_positives_repeat(
    make: Callable[[], NegativeSampler],
) -> None:
    positives = np.array([4, 4, 7, 7, 9, 11, 13, 15])
    sampler = make()
    for seed in range(10):
        out = draw(sampler, seed, positive_rows=positives, exclude=None)
        assert (out.items != positives[:, None]).all()


@every_sampler
def test_same_seed_same_draws(make: Callable[[], NegativeSampler]) -> None:
    first, second = draw(make(), seed=7), draw(make(), seed=7)
    np.testing.assert_array_equal(first.items, second.items)
    np.testing.assert_array_equal(first.log_q, second.log_q)


@every_sampler
def test_different_seed_different_draws(make: Callable[[], NegativeSampler]) -> None:
    assert not np.array_equal(draw(make(), seed=1).items, draw(make(), seed=2).items)


@every_sampler
def test_does_not_modify_its_inputs(make: Callable[[], NegativeSampler]) -> None:
    positives = POSITIVE_ROWS.copy()
    exclude = [set(items) for items in EXCLUDE]
    draw(make(), seed=0, positive_rows=positives, exclude=exclude)
    np.testing.assert_array_equal(positives, POSITIVE_ROWS)
    assert exclude == EXCLUDE


@every_sampler
def test_clear_error_when_every_item_is_excluded(make: Callable[[], NegativeSampler]) -> None:
    exclude = [set(range(N_ITEMS)), *EXCLUDE[1:]]
    with pytest.raises(SamplingError, match="row 0"):
        draw(make(), seed=0, exclude=exclude)


@every_sampler
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"query_rows": QUERY_ROWS[:2]}, "same length"),
        ({"positive_rows": np.array([0, 1, N_ITEMS])}, r"positive_rows\[2\]"),
        ({"positive_rows": np.array([0.0, 1.0, 2.0])}, "integer"),
        ({"positive_rows": np.zeros((2, 2), dtype=int)}, "1-D"),
        ({"n": 0}, "positive integer"),
        ({"exclude": [set()]}, "one collection per query row"),
        ({"exclude": [{-1}, set(), set()]}, r"exclude\[0\]"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(
    make: Callable[[], NegativeSampler], arguments: dict[str, object], message: str
) -> None:
    call: dict[str, object] = {
        "query_rows": QUERY_ROWS[:3],
        "positive_rows": POSITIVE_ROWS[:3],
        "n": 1,
        "rng": np.random.default_rng(0),
        "exclude": None,
    }
    call.update(arguments)
    if "positive_rows" in arguments and "query_rows" not in arguments:
        call["query_rows"] = QUERY_ROWS[: len(np.asarray(arguments["positive_rows"]))]
    with pytest.raises(SamplingError, match=message):
        make().sample(**call)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sampler", "golden"),
    [
        (UniformSampler(10), [[6, 2, 7, 3, 2], [7, 6, 6, 9, 3]]),
        (PopularitySampler(np.array([5, 1, 0, 3, 8, 2])), [[1, 1, 4, 4, 3], [2, 4, 0, 4, 5]]),
    ],
    ids=["uniform", "popularity"],
)
def test_same_seed_same_draws_on_any_machine(
    sampler: NegativeSampler, golden: list[list[int]]
) -> None:
    # Golden values: the draws are a pure function of the seed, whatever the machine. If a numpy
    # upgrade changes its Generator streams this fails, and every seeded run's samples change.
    out = sampler.sample(
        query_rows=np.array([0, 1]),
        positive_rows=np.array([0, 1]),
        n=5,
        rng=np.random.default_rng(12345),
    )
    assert out.items.tolist() == golden


@settings(max_examples=40, deadline=None)
@given(
    n_items=st.integers(2, 12),
    data=st.data(),
    replace=st.booleans(),
    popularity=st.booleans(),
)
def test_catalog_samplers_respect_any_exclusion(
    n_items: int, data: st.DataObject, replace: bool, popularity: bool
) -> None:
    positives = np.array(data.draw(st.lists(st.integers(0, n_items - 1), min_size=1, max_size=4)))
    exclude = [data.draw(st.sets(st.integers(0, n_items - 1), max_size=n_items)) for _ in positives]
    n = data.draw(st.integers(1, 3))
    sampler: NegativeSampler = (
        PopularitySampler(np.arange(n_items), 1.0, replace=replace)
        if popularity
        else UniformSampler(n_items, replace=replace)
    )
    allowed = [set(range(n_items)) - {int(p)} - e for p, e in zip(positives, exclude, strict=True)]
    feasible = all(len(a) >= (1 if replace else n) for a in allowed)
    call = {"query_rows": positives, "positive_rows": positives, "n": n, "exclude": exclude}
    if not feasible:
        with pytest.raises(SamplingError):
            sampler.sample(rng=np.random.default_rng(0), **call)  # type: ignore[arg-type]
        return
    out = sampler.sample(rng=np.random.default_rng(0), **call)  # type: ignore[arg-type]
    for row, items in enumerate(out.items.tolist()):
        assert set(items) <= allowed[row]
        if not replace:
            assert len(set(items)) == n


# --- uniform and popularity ----------------------------------------------------------------


def test_uniform_frequencies_match_the_conditional_uniform() -> None:
    positives = np.repeat(np.arange(10), 300)
    out = UniformSampler(10).sample(
        query_rows=positives, positive_rows=positives, n=20, rng=np.random.default_rng(3)
    )
    observed = np.bincount(out.items.ravel(), minlength=10)
    assert_matches(observed, expected_counts(np.full(10, 0.1), positives, 20))
    np.testing.assert_allclose(out.log_q, -np.log(10))


POPULARITY_COUNTS = np.array([50, 30, 10, 5, 5, 0, 100, 20, 1, 9])


@pytest.mark.parametrize("replace", [True, False])
def test_popularity_alpha_one_frequencies_match_counts(replace: bool) -> None:
    sampler = PopularitySampler(POPULARITY_COUNTS, alpha=1.0, smoothing=0.0, replace=replace)
    q = POPULARITY_COUNTS / POPULARITY_COUNTS.sum()
    np.testing.assert_allclose(sampler.probabilities, q)
    positives = np.repeat(np.array([0, 6, 2, 9]), 1500)
    n = 10 if replace else 1
    out = sampler.sample(
        query_rows=positives, positive_rows=positives, n=n, rng=np.random.default_rng(11)
    )
    observed = np.bincount(out.items.ravel(), minlength=10)
    expected = expected_counts(q, positives, n)
    assert_matches(observed, expected)
    # The test has power: the same draws are far from uniform.
    uniform = expected_counts(np.full(10, 0.1), positives, n)
    assert chisquare(observed, uniform * observed.sum() / uniform.sum()).pvalue < 1e-12
    np.testing.assert_allclose(out.log_q, np.log(q[out.items]))


def test_popularity_alpha_zero_is_uniform_even_for_unseen_items() -> None:
    sampler = PopularitySampler(POPULARITY_COUNTS, alpha=0.0, smoothing=0.0)
    np.testing.assert_allclose(sampler.probabilities, np.full(10, 0.1))
    positives = np.repeat(np.arange(10), 300)
    out = sampler.sample(
        query_rows=positives, positive_rows=positives, n=20, rng=np.random.default_rng(5)
    )
    observed = np.bincount(out.items.ravel(), minlength=10)
    assert_matches(observed, expected_counts(np.full(10, 0.1), positives, 20))


def test_popularity_weights_are_smoothed_counts_to_the_alpha() -> None:
    sampler = PopularitySampler(np.array([3, 0, 8]), alpha=0.5, smoothing=1.0)
    np.testing.assert_allclose(sampler.probabilities, np.array([2.0, 1.0, 3.0]) / 6.0)


def test_popularity_never_draws_items_of_weight_zero() -> None:
    sampler = PopularitySampler(np.array([0, 0, 5, 1]), alpha=1.0, smoothing=0.0)
    out = sampler.sample(
        query_rows=np.zeros(50, dtype=int),
        positive_rows=np.full(50, 3),
        n=10,
        rng=np.random.default_rng(0),
    )
    assert (out.items == 2).all()
    with pytest.raises(SamplingError, match="row 0"):
        sampler.sample(
            query_rows=np.array([0]),
            positive_rows=np.array([2]),
            n=1,
            rng=np.random.default_rng(0),
            exclude=[{3}],
        )


@pytest.mark.parametrize("max_retries", [0, 8])
@pytest.mark.parametrize(
    "make",
    [
        lambda r: UniformSampler(50, max_retries=r),
        lambda r: PopularitySampler(np.ones(50), 1.0, max_retries=r),
    ],
    ids=["uniform", "popularity"],
)
def test_heavy_exclusion_draws_the_only_allowed_item(
    make: Callable[[int], NegativeSampler], max_retries: int
) -> None:
    exclude = [set(range(50)) - {17}, set()]
    out = make(max_retries).sample(
        query_rows=np.array([0, 1]),
        positive_rows=np.array([0, 1]),
        n=30,
        rng=np.random.default_rng(0),
        exclude=exclude,
    )
    assert (out.items[0] == 17).all()
    assert 1 not in out.items[1]
    assert len(set(out.items[1].tolist())) > 10  # the unconstrained row is not affected


@pytest.mark.parametrize(
    "sampler",
    [UniformSampler(6, replace=False), PopularitySampler(np.ones(6), replace=False)],
    ids=["uniform", "popularity"],
)
def test_without_replacement_needs_enough_items(sampler: NegativeSampler) -> None:
    rows = np.array([0])
    out = sampler.sample(query_rows=rows, positive_rows=rows, n=5, rng=np.random.default_rng(0))
    assert sorted(out.items[0].tolist()) == [1, 2, 3, 4, 5]
    with pytest.raises(SamplingError, match=r"only 5 catalog items left.*6 are needed"):
        sampler.sample(query_rows=rows, positive_rows=rows, n=6, rng=np.random.default_rng(0))


def test_uniform_without_replacement_is_uniform_over_the_allowed_items() -> None:
    rows = np.full(3000, 2)
    out = UniformSampler(8, replace=False).sample(
        query_rows=rows,
        positive_rows=rows,
        n=3,
        rng=np.random.default_rng(6),
        exclude=[{5}] * len(rows),
    )
    assert all(len(set(items)) == 3 for items in out.items.tolist())
    allowed = [0, 1, 3, 4, 6, 7]
    for column in range(3):  # every position, not only the set, is uniform
        observed = np.bincount(out.items[:, column], minlength=8)
        assert observed[[2, 5]].sum() == 0
        assert chisquare(observed[allowed]).pvalue > 1e-3


class ConstantDraws:
    """Stands in for a Generator whose uniform draws in [0, 1) are all ``value``."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self, size: int | tuple[int, ...]) -> np.ndarray:
        return np.full(size, self.value)


@pytest.mark.parametrize(("value", "expected"), [(0.0, 1), (np.nextafter(1.0, 0.0), 3)])
def test_categorical_never_returns_an_outcome_of_weight_zero(value: float, expected: int) -> None:
    categorical = Categorical(np.array([0.0, 0.1, 0.0, 0.9, 0.0]))
    drawn = categorical.draw(3, ConstantDraws(value))  # type: ignore[arg-type]
    np.testing.assert_array_equal(drawn, [expected] * 3)


# --- in-batch and mixed --------------------------------------------------------------------


def test_in_batch_takes_every_other_positive_with_popularity_log_q() -> None:
    counts = np.array([3, 1, 0, 4, 2])
    sampler = InBatchSampler(5, counts=counts, smoothing=1.0)
    positives = np.array([0, 1, 3, 4])
    out = sampler.sample(
        query_rows=np.arange(4), positive_rows=positives, n=3, rng=np.random.default_rng(0)
    )
    for row, items in enumerate(out.items.tolist()):
        assert sorted(items) == sorted(set(positives.tolist()) - {positives[row]})
    q = (counts + 1.0) / (counts + 1.0).sum()
    np.testing.assert_allclose(out.log_q, np.log(q[out.items]))
    np.testing.assert_allclose(sampler.log_q_of(positives), np.log(q[positives]))


def test_in_batch_skips_duplicates_of_the_own_positive_and_says_when_short() -> None:
    positives = np.array([2, 2, 2, 5, 8])
    sampler = InBatchSampler(10)
    out = sampler.sample(
        query_rows=np.arange(5), positive_rows=positives, n=2, rng=np.random.default_rng(0)
    )
    assert [sorted(items) for items in out.items.tolist()[:3]] == [[5, 8]] * 3
    np.testing.assert_array_equal(out.log_q, 0.0)
    with pytest.raises(SamplingError, match=r"row 0.*only 2 distinct in-batch positives"):
        sampler.sample(
            query_rows=np.arange(5), positive_rows=positives, n=3, rng=np.random.default_rng(0)
        )


def test_in_batch_chooses_uniformly_among_the_other_positives() -> None:
    sampler = InBatchSampler(10)
    positives = np.array([0, 1, 2, 3, 4])
    rng = np.random.default_rng(9)
    first = [
        int(sampler.sample(query_rows=positives, positive_rows=positives, n=1, rng=rng).items[0, 0])
        for _ in range(1000)
    ]
    observed = np.bincount(first, minlength=5)
    assert observed[0] == 0
    assert chisquare(observed[1:]).pvalue > 1e-3


def test_mixed_puts_in_batch_first_and_logs_the_mixture() -> None:
    counts = np.array([1, 1, 2, 4, 0, 0, 0, 0])
    in_batch = InBatchSampler(8, counts=counts, smoothing=0.0)
    sampler = MixedSampler(in_batch, UniformSampler(8), n_uniform=1)
    positives = np.array([0, 1, 2, 3])
    out = sampler.sample(
        query_rows=np.arange(4), positive_rows=positives, n=3, rng=np.random.default_rng(0)
    )
    assert set(out.items[:, :2].ravel().tolist()) <= set(positives.tolist())
    p_in = counts / counts.sum()
    mixture = (2 * p_in + 1 * np.full(8, 1 / 8)) / 3
    np.testing.assert_allclose(out.log_q, np.log(mixture[out.items]))
    assert np.isfinite(out.log_q).all()  # unseen catalog items still have q > 0


def test_mixed_catalog_part_reaches_items_outside_the_batch() -> None:
    sampler = MixedSampler(InBatchSampler(30), UniformSampler(30), n_uniform=2)
    positives = np.array([0, 1, 2])
    out = sampler.sample(
        query_rows=np.arange(3), positive_rows=positives, n=4, rng=np.random.default_rng(0)
    )
    seen = set()
    rng = np.random.default_rng(1)
    for _ in range(20):
        seen |= set(
            sampler.sample(query_rows=np.arange(3), positive_rows=positives, n=4, rng=rng)
            .items[:, 2:]
            .ravel()
            .tolist()
        )
    assert len(seen - {0, 1, 2}) > 10
    np.testing.assert_array_equal(out.log_q, 0.0)  # no counts: no correction


@pytest.mark.parametrize(("n_uniform", "in_batch_columns"), [(0, 3), (3, 0)])
def test_mixed_with_only_one_part(n_uniform: int, in_batch_columns: int) -> None:
    sampler = MixedSampler(InBatchSampler(30), UniformSampler(30), n_uniform=n_uniform)
    positives = np.array([0, 1, 2, 3])
    out = sampler.sample(
        query_rows=np.arange(4), positive_rows=positives, n=3, rng=np.random.default_rng(0)
    )
    in_batch = np.isin(out.items, positives)
    assert in_batch[:, :in_batch_columns].all()


def test_mixed_errors() -> None:
    with pytest.raises(ConfigError, match="n_items"):
        MixedSampler(InBatchSampler(10), UniformSampler(11), 1)
    with pytest.raises(ConfigError, match="n_uniform"):
        MixedSampler(InBatchSampler(10), UniformSampler(10), -1)
    sampler = MixedSampler(InBatchSampler(10), UniformSampler(10), 3)
    with pytest.raises(SamplingError, match="n_uniform=3"):
        sampler.sample(
            query_rows=np.arange(3), positive_rows=np.arange(3), n=2, rng=np.random.default_rng(0)
        )


# --- hard pool -----------------------------------------------------------------------------


def test_hard_pool_draws_from_the_pool_and_tops_up_short_ones() -> None:
    sampler = HardPoolSampler(POOL, UniformSampler(N_ITEMS))
    for seed in range(10):
        out = draw(sampler, seed)
        # Row 0 (query 100): pool minus its excluded items has 6 items >= n: all from the pool.
        assert set(out.items[0].tolist()) <= set(POOL[100].tolist())
        assert len(set(out.items[0].tolist())) == N
        # Row 1 (query 101): only 36 is left in its pool; it comes first, then 3 fallback items.
        assert out.items[1, 0] == 36
        assert 36 not in out.items[1, 1:]
        # Row 3 (query 103): pool minus {10, 11} has 5 items >= n.
        assert set(out.items[3].tolist()) <= {12, 13, 14, 15, 16}
        np.testing.assert_array_equal(out.log_q, 0.0)


def test_hard_pool_draws_pool_items_uniformly() -> None:
    sampler = HardPoolSampler({0: np.array([1, 2, 3, 4])}, UniformSampler(10))
    rng = np.random.default_rng(4)
    rows = np.zeros(3000, dtype=int)
    out = sampler.sample(query_rows=rows, positive_rows=rows, n=1, rng=rng)
    observed = np.bincount(out.items.ravel(), minlength=5)[1:]
    assert chisquare(observed).pvalue > 1e-3


def test_hard_pool_rejects_a_bad_pool() -> None:
    fallback = UniformSampler(10)
    with pytest.raises(ConfigError, match=r"pool\[3\].*outside the catalog"):
        HardPoolSampler({3: np.array([1, 10])}, fallback)
    with pytest.raises(ConfigError, match=r"pool\[3\] must be a 1-D integer"):
        HardPoolSampler({3: np.array([[1, 2]])}, fallback)
    with pytest.raises(ConfigError, match="integer query rows"):
        HardPoolSampler({"q1": np.array([1])}, fallback)  # type: ignore[dict-item]


def test_hard_pool_names_the_failing_fallback() -> None:
    sampler = HardPoolSampler({0: np.array([1])}, UniformSampler(3, replace=False))
    with pytest.raises(SamplingError, match="fallback could not top up"):
        sampler.sample(
            query_rows=np.array([0]), positive_rows=np.array([0]), n=3, rng=np.random.default_rng(0)
        )


def test_pool_from_samples_maps_ids_to_rows() -> None:
    samples = pd.DataFrame(
        {
            "query_id": ["q1", "q1", "q1", "q2", "q2", "q1"],
            "product_id": ["p0", "p2", "p3", "p2", "p1", "p2"],
            "kind": ["positive", "negative", "negative", "negative", "negative", "negative"],
            "method": ["judged", "bm25", "dense", "bm25", "random", "dense"],
        }
    )
    query_rows = {"q1": 0, "q2": 1}
    item_rows = {"p0": 10, "p1": 11, "p2": 12, "p3": 13}
    pool = pool_from_samples(samples, query_rows=query_rows, item_rows=item_rows)
    assert {row: items.tolist() for row, items in pool.items()} == {0: [12, 13], 1: [12, 11]}
    hard = pool_from_samples(samples, query_rows=query_rows, item_rows=item_rows, methods={"bm25"})
    assert {row: items.tolist() for row, items in hard.items()} == {0: [12], 1: [12]}
    with pytest.raises(DataError, match=r"'product_id'.*'p3' has no item row"):
        pool_from_samples(samples, query_rows=query_rows, item_rows={"p1": 1, "p2": 2})
    with pytest.raises(DataError, match="'method'"):
        pool_from_samples(
            samples.drop(columns="method"), query_rows=query_rows, item_rows=item_rows
        )


# --- dynamic -------------------------------------------------------------------------------


def dynamic_draws(sampler: DynamicSampler, rows: np.ndarray, n: int, seed: int) -> NegativeSample:
    return sampler.sample(
        query_rows=rows, positive_rows=rows % N_ITEMS, n=n, rng=np.random.default_rng(seed)
    )


def test_dynamic_low_temperature_takes_the_top_scored_allowed_item() -> None:
    sampler = DynamicSampler(CountingScorer(), N_ITEMS, temperature=1e-4)
    # Query 3 prefers item 21; query 5 prefers item 35, which is its... positive is 5 here.
    rows = np.array([3, 5])
    out = sampler.sample(
        query_rows=rows,
        positive_rows=np.array([21, 0]),
        n=50,
        rng=np.random.default_rng(0),
        exclude=[{20}, set()],
    )
    assert (out.items[0] == 22).all()  # 21 is the positive, 20 excluded: 22 is next best
    assert (out.items[1] == 35).all()


def test_dynamic_low_temperature_without_replacement_takes_the_top_n_in_order() -> None:
    sampler = DynamicSampler(CountingScorer(), N_ITEMS, temperature=1e-4, replace=False)
    out = sampler.sample(
        query_rows=np.array([2]), positive_rows=np.array([0]), n=3, rng=np.random.default_rng(0)
    )
    assert out.items[0, 0] == 14  # (7 * 2) % 40
    assert sorted(out.items[0, 1:].tolist()) == [13, 15]


def test_dynamic_high_temperature_is_uniform() -> None:
    sampler = DynamicSampler(CountingScorer(), N_ITEMS, temperature=1e6)
    rows = np.repeat(np.array([1, 2, 3]), 200)
    positives = np.repeat(np.array([7, 14, 21]), 200)
    out = sampler.sample(
        query_rows=rows, positive_rows=positives, n=20, rng=np.random.default_rng(2)
    )
    observed = np.bincount(out.items.ravel(), minlength=N_ITEMS)
    assert_matches(observed, expected_counts(np.full(N_ITEMS, 1 / N_ITEMS), positives, 20))


def test_dynamic_frequencies_and_log_q_follow_the_score_softmax() -> None:
    temperature = 0.5
    sampler = DynamicSampler(CountingScorer(), N_ITEMS, temperature=temperature)
    rows = np.full(3000, 4)
    positives = np.full(3000, 28)  # query 4 prefers item 28: its positive is excluded
    out = sampler.sample(
        query_rows=rows, positive_rows=positives, n=5, rng=np.random.default_rng(8)
    )
    logits = scores_for(np.array([4]), np.arange(N_ITEMS))[0] / temperature
    q = np.exp(logits - logits.max())
    q /= q.sum()
    observed = np.bincount(out.items.ravel(), minlength=N_ITEMS)
    expected = expected_counts(q, positives, 5)
    keep = expected > 5  # chi-square needs expected counts that are not tiny
    assert (
        chisquare(
            observed[keep], expected[keep] * observed[keep].sum() / expected[keep].sum()
        ).pvalue
        > 1e-3
    )
    np.testing.assert_allclose(out.log_q, np.log(q[out.items]))


def test_dynamic_refreshes_exactly_every_n_steps() -> None:
    scorer = CountingScorer()
    sampler = DynamicSampler(scorer, N_ITEMS, refresh_every=3)
    rows = np.array([1, 2, 2, 3])
    for step in range(10):
        dynamic_draws(sampler, rows, 2, seed=step)
    assert sampler.step == 10
    assert len(scorer.calls) == 4  # steps 0, 3, 6, 9
    for query_rows, item_rows in scorer.calls:
        np.testing.assert_array_equal(query_rows, [1, 2, 3])  # once per distinct query row
        assert item_rows is None


def test_dynamic_scores_only_new_queries_and_refresh_forces_a_rescore() -> None:
    scorer = CountingScorer()
    sampler = DynamicSampler(scorer, N_ITEMS, refresh_every=100)
    dynamic_draws(sampler, np.array([1, 2]), 2, seed=0)
    dynamic_draws(sampler, np.array([2, 3, 4]), 2, seed=1)
    dynamic_draws(sampler, np.array([1, 4]), 2, seed=2)
    assert [call[0].tolist() for call in scorer.calls] == [[1, 2], [3, 4]]
    sampler.refresh()
    dynamic_draws(sampler, np.array([1, 4]), 2, seed=3)
    assert [call[0].tolist() for call in scorer.calls][-1] == [1, 4]


class DriftingScorer:
    """Prefers item 10 + (number of calls so far): a model that changes as it trains."""

    def __init__(self) -> None:
        self.calls = 0

    def score(self, query_rows: np.ndarray, item_rows: np.ndarray | None) -> np.ndarray:
        scores = np.zeros((len(query_rows), N_ITEMS))
        scores[:, 10 + self.calls] = 10.0
        self.calls += 1
        return scores


def test_dynamic_uses_the_new_scores_after_a_refresh() -> None:
    sampler = DynamicSampler(DriftingScorer(), N_ITEMS, temperature=1e-3, refresh_every=2)
    top = [int(dynamic_draws(sampler, np.array([0]), 1, seed=s).items[0, 0]) for s in range(6)]
    assert top == [10, 10, 11, 11, 12, 12]


def test_dynamic_candidates_score_a_subset_redrawn_at_each_refresh() -> None:
    scorer = CountingScorer()
    sampler = DynamicSampler(scorer, N_ITEMS, candidates=12, refresh_every=2, temperature=2.0)
    outs = [dynamic_draws(sampler, np.array([1, 2]), 6, seed=s) for s in range(4)]
    assert len(scorer.calls) == 2
    subsets = [call[1] for call in scorer.calls]
    for subset in subsets:
        assert subset is not None and len(subset) == 12 and len(set(subset.tolist())) == 12
    assert subsets[0] is not None and subsets[1] is not None
    assert not np.array_equal(subsets[0], subsets[1])
    for step, out in enumerate(outs):
        subset = subsets[step // 2]
        assert subset is not None
        assert set(out.items.ravel().tolist()) <= set(subset.tolist())
        logits = scores_for(np.array([1]), subset)[0] / 2.0
        log_softmax = logits - np.log(np.exp(logits).sum())
        expected = log_softmax[np.searchsorted(subset, out.items[0])] + np.log(12 / N_ITEMS)
        np.testing.assert_allclose(out.log_q[0], expected)


class BrokenScorer:
    def __init__(self, result: np.ndarray) -> None:
        self.result = result

    def score(self, query_rows: np.ndarray, item_rows: np.ndarray | None) -> np.ndarray:
        return self.result


@pytest.mark.parametrize(
    ("result", "message"),
    [(np.zeros((1, N_ITEMS - 1)), "returned shape"), (np.full((1, N_ITEMS), np.nan), "non-finite")],
)
def test_dynamic_checks_what_the_scorer_returns(result: np.ndarray, message: str) -> None:
    sampler = DynamicSampler(BrokenScorer(result), N_ITEMS)
    with pytest.raises(SamplingError, match=message):
        dynamic_draws(sampler, np.array([1]), 1, seed=0)


def test_fake_scorers_satisfy_the_scorer_protocol() -> None:
    assert isinstance(CountingScorer(), Scorer)
    assert isinstance(DriftingScorer(), Scorer)


# --- registry and configuration -------------------------------------------------------------


def test_registry_names() -> None:
    assert set(SAMPLERS) == {"uniform", "popularity", "in_batch", "mixed", "hard_pool", "dynamic"}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_build_sampler_builds_every_registered_sampler(name: str) -> None:
    sampler = build_sampler(
        SamplerConfig(name=name, n_uniform=1),
        n_items=N_ITEMS,
        counts=COUNTS,
        pool=POOL,
        scorer=CountingScorer(),
    )
    assert type(sampler) is SAMPLERS[name]
    out = draw(sampler, seed=0)
    assert out.items.shape == (len(POSITIVE_ROWS), N)


def test_build_sampler_passes_the_settings_on() -> None:
    popularity = build_sampler(
        SamplerConfig(name="popularity", alpha=1.0, smoothing=0.0),
        n_items=3,
        counts=np.array([1, 0, 3]),
    )
    assert isinstance(popularity, PopularitySampler)
    np.testing.assert_allclose(popularity.probabilities, np.array([0.25, 0.0, 0.75]))
    dynamic = build_sampler(
        SamplerConfig(
            name="dynamic", temperature=0.25, refresh_every=7, candidates=9, replace=False
        ),
        n_items=N_ITEMS,
        scorer=CountingScorer(),
    )
    assert isinstance(dynamic, DynamicSampler)
    assert (dynamic.temperature, dynamic.refresh_every, dynamic.candidates, dynamic.replace) == (
        0.25,
        7,
        9,
        False,
    )
    mixed = build_sampler(
        SamplerConfig(name="mixed", n_uniform=3, catalog_sampler="popularity"),
        n_items=N_ITEMS,
        counts=COUNTS,
    )
    assert isinstance(mixed, MixedSampler)
    assert mixed.n_uniform == 3 and isinstance(mixed.uniform, PopularitySampler)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "random"}, r"unknown sampler 'random'.*'dynamic'"),
        ({"alpha": -0.5}, "alpha must be"),
        ({"alpha": float("nan")}, "alpha must be"),
        ({"smoothing": -1.0}, "smoothing must be"),
        ({"temperature": 0.0}, "temperature must be"),
        ({"temperature": -1.0}, "temperature must be"),
        ({"temperature": float("inf")}, "temperature must be"),
        ({"refresh_every": 0}, "refresh_every must be"),
        ({"n_uniform": -1}, "n_uniform must be"),
        ({"candidates": 1}, "candidates must be"),
        ({"catalog_sampler": "dynamic"}, "catalog_sampler must be"),
        ({"replace": "yes"}, "replace must be"),
    ],
)
def test_config_errors_name_the_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SamplerConfig(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("config", "inputs", "message"),
    [
        (SamplerConfig(name="popularity"), {}, "needs item counts"),
        (SamplerConfig(name="mixed", catalog_sampler="popularity"), {}, "needs item counts"),
        (SamplerConfig(name="hard_pool"), {}, "needs pool"),
        (SamplerConfig(name="dynamic"), {}, "needs scorer"),
        (SamplerConfig(name="dynamic"), {"scorer": object()}, "needs scorer"),
        (
            SamplerConfig(name="dynamic", candidates=50),
            {"scorer": CountingScorer()},
            "exceeds n_items",
        ),
        (SamplerConfig(name="uniform"), {"counts": np.ones(N_ITEMS + 1)}, "one entry per item"),
        (SamplerConfig(name="in_batch"), {"counts": -np.ones(N_ITEMS)}, r"counts\[0\] = -1"),
        (SamplerConfig(name="popularity"), {"counts": np.zeros(N_ITEMS), "n_items": N_ITEMS}, None),
    ],
)
def test_build_sampler_errors(
    config: SamplerConfig, inputs: dict[str, object], message: str | None
) -> None:
    arguments: dict[str, object] = {"n_items": N_ITEMS, **inputs}
    if message is None:  # all-zero counts are fine with the default add-one smoothing
        assert build_sampler(config, **arguments).n_items == N_ITEMS  # type: ignore[arg-type]
        return
    with pytest.raises(ConfigError, match=message):
        build_sampler(config, **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: UniformSampler(1), "n_items"),
        (lambda: PopularitySampler(COUNTS, alpha=-1.0), "alpha"),
        (lambda: PopularitySampler(np.zeros(5), smoothing=0.0), "smoothing > 0"),
        (lambda: PopularitySampler(np.array([1.0, np.inf])), r"counts\[1\]"),
        (lambda: PopularitySampler(np.ones((2, 2))), "1-D"),
        (lambda: PopularitySampler(np.array([1e300, 1.0]), alpha=2.0), "overflows"),
        (lambda: InBatchSampler(5, counts=np.ones(4)), "4 entries but n_items is 5"),
        (lambda: DynamicSampler(CountingScorer(), N_ITEMS, temperature=0.0), "temperature"),
        (lambda: DynamicSampler(CountingScorer(), N_ITEMS, refresh_every=0), "refresh_every"),
        (lambda: DynamicSampler(CountingScorer(), N_ITEMS, candidates=N_ITEMS + 1), "candidates"),
    ],
)
def test_constructor_errors(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


@pytest.mark.parametrize(
    "module",
    ["uniform", "popularity", "in_batch", "mixed", "hard_pool", "dynamic", "registry"],
)
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(f"shopaug.samplers.{module}"))
    assert result.attempted > 0
    assert result.failed == 0
