"""Team-draft interleaving: compare champion and challenger on live traffic, one list a query.

Radlinski, Kurup and Joachims, "How does clickthrough data reflect retrieval quality?"
(CIKM 2008). For each query the two rankings are merged by a draft: in every round a fair coin
decides which ranker picks first; each ranker in turn adds its highest-ranked product not in
the list yet, and the product is credited to that ranker's *team*. The user sees one list; a
click on a product credits its team. A session where the challenger's team gets more clicks is
a win for the challenger, fewer a loss, equal (no click included) a tie.

Because both rankers are judged on the same user, query and moment, position bias and the
query's difficulty cancel out, which is why production search teams need far fewer sessions
with interleaving than with an A/B split of the traffic (``benchmarks/interleaving.py``
measures how many on the simulator).

:func:`interleaving_decision` is the gate: promote the challenger when it wins more sessions
than it loses with a one-sided binomial (sign) test ``p < alpha`` over the non-tied sessions.

Example:
    >>> rng = np.random.default_rng(0)
    >>> shown = team_draft(["a", "b", "c"], ["c", "a", "d"], length=4, rng=rng)
    >>> sorted(shown.products) == ["a", "b", "c", "d"]
    True
    >>> credit(shown, clicked=[]) == 0
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: Team labels of :class:`Interleaving`.
CHAMPION, CHALLENGER = 0, 1


@dataclass(frozen=True, slots=True)
class Interleaving:
    """One interleaved list: the products shown, best first, and the team of each position
    (:data:`CHAMPION` or :data:`CHALLENGER`)."""

    products: tuple[str, ...]
    teams: tuple[int, ...]


def team_draft(
    champion: Sequence[str],
    challenger: Sequence[str],
    *,
    length: int,
    rng: np.random.Generator,
) -> Interleaving:
    """Team-draft interleave two rankings into at most ``length`` products.

    The team with fewer picks so far picks next; when both have as many, a coin (``rng``)
    decides (the draft of Radlinski et al.): each pick is the ranker's highest-ranked product
    not shown yet. A ranker whose list is used up stops picking; the list ends when both are
    or ``length`` is reached.

    Raises:
        ValueError: ``length`` below 1.
    """
    if length < 1:
        raise ValueError(f"length is {length}; expected 1 or more")
    lists = (list(champion), list(challenger))
    cursor = [0, 0]
    picks = [0, 0]
    products: list[str] = []
    teams: list[int] = []
    shown: set[str] = set()

    def next_of(team: int) -> str | None:
        ranking = lists[team]
        while cursor[team] < len(ranking) and ranking[cursor[team]] in shown:
            cursor[team] += 1
        return ranking[cursor[team]] if cursor[team] < len(ranking) else None

    while len(products) < length:
        if picks[CHAMPION] != picks[CHALLENGER]:
            team = CHAMPION if picks[CHAMPION] < picks[CHALLENGER] else CHALLENGER
        else:
            team = int(rng.integers(2))  # the coin of this round
        product = next_of(team)
        if product is None:  # this ranker's list is used up: the other picks
            team = 1 - team
            product = next_of(team)
            if product is None:
                break
        products.append(product)
        teams.append(team)
        shown.add(product)
        picks[team] += 1
    return Interleaving(tuple(products), tuple(teams))


def credit(shown: Interleaving, clicked: Sequence[int]) -> int:
    """+1 when the challenger's team got more of the ``clicked`` positions (1-based), -1 when
    the champion's did, 0 for a tie (no click included).

    Raises:
        ValueError: a clicked position outside the shown list.
    """
    votes = [0, 0]
    for position in clicked:
        if not 1 <= position <= len(shown.teams):
            raise ValueError(
                f"clicked position {position} is outside the {len(shown.teams)} shown results"
            )
        votes[shown.teams[position - 1]] += 1
    return int(np.sign(votes[CHALLENGER] - votes[CHAMPION]))


@dataclass(frozen=True, slots=True)
class InterleavingDecision:
    """The interleaving gate's answer and its evidence."""

    promote: bool
    wins: int
    losses: int
    ties: int
    p_value: float
    reason: str


def interleaving_decision(outcomes: Sequence[int], *, alpha: float = 0.05) -> InterleavingDecision:
    """Promote when the challenger wins significantly more sessions than it loses.

    ``outcomes`` holds one :func:`credit` per session. The test is the one-sided binomial
    (sign) test of the wins among the non-tied sessions against 1/2.

    Raises:
        ValueError: ``alpha`` outside (0, 1), or an outcome other than -1, 0, 1.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha is {alpha}; expected a probability in (0, 1)")
    values = np.asarray(outcomes, dtype=np.int64)
    if values.size and not np.isin(values, (-1, 0, 1)).all():
        raise ValueError("outcomes must be -1, 0 or 1 (see credit())")
    wins = int((values == 1).sum())
    losses = int((values == -1).sum())
    ties = int((values == 0).sum())
    decided = wins + losses
    p_value = (
        1.0 if decided == 0 else float(stats.binomtest(wins, decided, alternative="greater").pvalue)
    )
    promote = wins > losses and p_value < alpha
    reason = (
        f"challenger won {wins} and lost {losses} of {decided} decided sessions ({ties} ties), "
        f"one-sided sign test p={p_value:.3g}: "
        + ("promote" if promote else f"keep the champion (needs p < {alpha:g})")
    )
    return InterleavingDecision(promote, wins, losses, ties, p_value, reason)
