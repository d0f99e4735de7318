"""TIFU-KNN and personal frequency with time decay against hand-computed toy cases."""

from __future__ import annotations

import numpy as np
import pytest

from shopaug.models.recommenders import (
    Interactions,
    TifuKnn,
    TifuKnnConfig,
    decayed_frequency_config,
    tifu_basket_weights,
    top_k,
)

ITEMS = ["a", "b", "c", "d"]
# baskets in time order; u1: [a b] [a] [c], u2: [b] [b c], u3: [d] [d] [a d]
BASKETS = [
    ("u1", ["a", "b"]),
    ("u2", ["b"]),
    ("u3", ["d"]),
    ("u1", ["a"]),
    ("u3", ["d"]),
    ("u2", ["b", "c"]),
    ("u1", ["c"]),
    ("u3", ["a", "d"]),
]
HALF = TifuKnnConfig(group_size=2, within_decay=0.5, group_decay=0.5, neighbours=1, alpha=0.6)


@pytest.fixture
def data() -> Interactions:
    return Interactions.from_baskets(item_ids=ITEMS, baskets=BASKETS)


def test_basket_weights_follow_the_reference_grouping() -> None:
    # n = 3, m = 2: groups [b0] [b1 b2]; b_j decayed 0.5 ** (2 - j); groups 0.5 ** (1 - g);
    # group means; sum / 2 groups
    assert tifu_basket_weights(3, HALF).tolist() == pytest.approx(
        [0.25 * 0.5 / 1 / 2, 0.5 * 1 / 2 / 2, 1 * 1 / 2 / 2]
    )
    # n = 5, m = 3 without decay: groups of 1, 2, 2 baskets (the larger groups last)
    flat = TifuKnnConfig(group_size=3, within_decay=1.0, group_decay=1.0)
    assert tifu_basket_weights(5, flat).tolist() == pytest.approx([1 / 3] + [1 / 6] * 4)
    # n = 2 < m = 4: each basket its own group, group decay still counted from m - 1
    short = TifuKnnConfig(group_size=4, within_decay=0.5, group_decay=0.5)
    assert tifu_basket_weights(2, short).tolist() == pytest.approx(
        [0.5 * 0.5**3 / 2, 1 * 0.5**2 / 2]
    )


def test_tifu_knn_hand_computed(data: Interactions) -> None:
    model = TifuKnn(data, HALF)
    # u1 = 0.0625 [a b] + 0.125 [a] + 0.25 [c]; u2 = 0.125 [b] + 0.5 [b c];
    # u3 = 0.0625 [d] + 0.125 [d] + 0.25 [a d]
    vectors = model.vectors.toarray()
    np.testing.assert_allclose(vectors[0], [0.1875, 0.0625, 0.25, 0.0])
    np.testing.assert_allclose(vectors[1], [0.0, 0.625, 0.5, 0.0])
    np.testing.assert_allclose(vectors[2], [0.25, 0.0, 0.0, 0.4375])
    # squared distances from u1: u2 0.4140625, u3 0.26171875 -> the one neighbour is u3
    # (u1 itself, at distance 0, is left out); 0.6 * u1 + 0.4 * u3
    scores = model.score(["u1"], [[0, 1, 0, 2]])
    np.testing.assert_allclose(scores[0], [0.2125, 0.0375, 0.15, 0.175])
    assert [ITEMS[i] for i in top_k(scores, 4)[0]] == ["a", "d", "c", "b"]


def test_neighbours_are_averaged(data: Interactions) -> None:
    two = TifuKnnConfig(group_size=2, within_decay=0.5, group_decay=0.5, neighbours=2, alpha=0.0)
    scores = TifuKnn(data, two).score(["u1"], [[0, 1, 0, 2]])
    # alpha 0: only the mean of u2 and u3
    np.testing.assert_allclose(scores[0], [0.125, 0.3125, 0.25, 0.21875])


def test_decayed_frequency_is_the_personal_part(data: Interactions) -> None:
    model = TifuKnn(data, decayed_frequency_config(0.5))
    scores = model.score(["u1"], [[0, 1, 0, 2]])
    # one group of 3 baskets: a 0.25 + 0.5, b 0.25, c 1, all / 3; d never bought by u1
    np.testing.assert_allclose(scores[0, :3], [0.75 / 3, 0.25 / 3, 1 / 3])
    assert scores[0, 3] < 0  # unscored: below every item the customer bought
    assert [ITEMS[i] for i in top_k(scores, 4)[0]] == ["c", "a", "b", "d"]


def test_unknown_customer_reads_each_history_entry_as_a_basket(data: Interactions) -> None:
    model = TifuKnn(data, decayed_frequency_config(0.5))
    known = Interactions.from_baskets(item_ids=ITEMS, baskets=[("x", ["a"]), ("x", ["a"])])
    expected = TifuKnn(known, decayed_frequency_config(0.5)).vectors.toarray()[0]
    scores = model.score(["ad-hoc"], [[0, 0]])
    np.testing.assert_allclose(scores[0, 0], expected[0])  # (0.5 + 1) / 2


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="group_size"):
        TifuKnnConfig(group_size=0)
    with pytest.raises(ValueError, match="decay"):
        TifuKnnConfig(within_decay=1.5)
    with pytest.raises(ValueError, match="alpha"):
        TifuKnnConfig(alpha=-0.1)
