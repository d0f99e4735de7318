"""Team-draft interleaving: the draft, the credit of clicks to the right ranker, the gate."""

from __future__ import annotations

import numpy as np
import pytest

from shopaug.online.interleaving import (
    CHALLENGER,
    CHAMPION,
    Interleaving,
    credit,
    interleaving_decision,
    team_draft,
)


class _Coin:
    """A generator whose coins are given in advance."""

    def __init__(self, coins: list[int]) -> None:
        self.coins = list(coins)

    def integers(self, high: int) -> int:
        assert high == 2
        return self.coins.pop(0)


def test_team_draft_known_answer() -> None:
    champion = ["a", "b", "c", "d"]
    challenger = ["b", "e", "a", "f"]
    # round 1: coin says champion first -> a (champion), then b (challenger);
    # round 2: coin says challenger first -> e (challenger), then c (champion)
    shown = team_draft(champion, challenger, length=4, rng=_Coin([CHAMPION, CHALLENGER]))
    assert shown.products == ("a", "b", "e", "c")
    assert shown.teams == (CHAMPION, CHALLENGER, CHALLENGER, CHAMPION)


def test_clicks_are_credited_to_the_team_that_placed_the_product() -> None:
    shown = Interleaving(("a", "b", "e", "c"), (CHAMPION, CHALLENGER, CHALLENGER, CHAMPION))
    assert credit(shown, [2]) == 1  # b was the challenger's pick
    assert credit(shown, [1]) == -1  # a was the champion's
    assert credit(shown, [1, 3]) == 0  # one each
    assert credit(shown, [2, 3, 4]) == 1
    assert credit(shown, []) == 0
    with pytest.raises(ValueError, match="outside"):
        credit(shown, [5])


def test_identical_rankings_tie_in_expectation_and_every_product_is_shown_once() -> None:
    rng = np.random.default_rng(0)
    ranking = [f"p{i}" for i in range(20)]
    teams = np.zeros(2)
    for _ in range(2000):
        shown = team_draft(ranking, ranking, length=10, rng=rng)
        assert shown.products == tuple(ranking[:10])  # the same list, whoever picks
        teams[shown.teams[0]] += 1
    assert abs(teams[0] - teams[1]) < 200  # the first pick is a fair coin


def test_a_used_up_list_lets_the_other_ranker_fill() -> None:
    shown = team_draft(["a"], ["b", "c", "d"], length=4, rng=np.random.default_rng(1))
    assert sorted(shown.products) == ["a", "b", "c", "d"]
    assert shown.teams.count(CHAMPION) == 1


def test_the_gate_promotes_only_a_significant_winner() -> None:
    assert interleaving_decision([1] * 30 + [-1] * 10 + [0] * 100).promote
    keep = interleaving_decision([1] * 12 + [-1] * 10 + [0] * 100)
    assert not keep.promote and keep.wins == 12 and keep.losses == 10 and keep.ties == 100
    assert not interleaving_decision([-1] * 30 + [1] * 5).promote
    assert interleaving_decision([0, 0]).p_value == 1.0
    with pytest.raises(ValueError, match="outcomes"):
        interleaving_decision([2])
