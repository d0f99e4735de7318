"""Choices made on validation queries only: which system, text fields or tower a figure uses.

Every choice of ``shopaug run`` and of the benchmarks (the row to serve, the product text
fields, the tower) goes through :func:`best_on_validation`, which is given per-query values of
validation queries and nothing else; :func:`choose_per_fold` restricts per-query values to each
fold's validation queries first, so a test query can never move a choice (a planted signal on
test queries is checked in the tests).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def best_on_validation(per_query: Mapping[str, Mapping[str, float]]) -> str:
    """The candidate (a key of ``per_query``) with the highest mean over its validation
    queries' values; ties go to the earlier candidate, and a candidate without any value is
    chosen only when no candidate has one (then the first).

    Raises:
        ValueError: no candidate.
    """
    if not per_query:
        raise ValueError("no candidate to choose from")
    best_name, best_value = next(iter(per_query)), float("-inf")
    for name, values in per_query.items():
        if values and (mean := float(np.mean(list(values.values())))) > best_value:
            best_name, best_value = name, mean
    return best_name


def choose_per_fold(
    per_query: Mapping[str, Mapping[str, float]],
    validation: Sequence[Sequence[str]],
) -> list[str]:
    """For each fold (its validation query ids in ``validation``), the candidate that
    :func:`best_on_validation` picks from its values on those queries only.

    Raises:
        KeyError: a validation query without a value for some candidate.
    """
    choices = []
    for query_ids in validation:
        restricted = {
            name: {qid: values[qid] for qid in query_ids} for name, values in per_query.items()
        }
        choices.append(best_on_validation(restricted))
    return choices
