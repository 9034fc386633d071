"""The postings builders: every ledger transaction the application writes sums to zero."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from core.ledger.postings import (
    ADJUSTMENTS,
    SPEND,
    TOKEN_SALES,
    Posting,
    _balanced,
    adjustment_postings,
    debit_postings,
    purchase_postings,
)


@pytest.mark.parametrize(
    ("postings", "wanted"),
    [
        (purchase_postings("alice", 5), [Posting("user:alice", 5), Posting(TOKEN_SALES, -5)]),
        (debit_postings("alice", 3), [Posting("user:alice", -3), Posting(SPEND, 3)]),
        (adjustment_postings("alice", -2), [Posting("user:alice", -2), Posting(ADJUSTMENTS, 2)]),
    ],
)
def test_builders_post_a_user_account_against_a_system_account(
    postings: list[Posting], wanted: list[Posting]
) -> None:
    assert postings == wanted
    assert sum(p.amount for p in postings) == 0


@pytest.mark.parametrize(
    "postings",
    [
        pytest.param([Posting("user:a", 5), Posting(ADJUSTMENTS, -4)], id="sums to one"),
        pytest.param([Posting("user:a", 1)], id="one leg"),
        pytest.param([Posting("user:a", 0), Posting(ADJUSTMENTS, 0)], id="zero legs"),
        pytest.param(
            [Posting("user:a", 5), Posting("user:b", 0), Posting(ADJUSTMENTS, -5)],
            id="a zero leg among balanced ones",
        ),
    ],
)
def test_balanced_guard_refuses_postings_that_do_not_sum_to_zero_or_move_nothing(
    postings: list[Posting],
) -> None:
    with pytest.raises(ValueError, match="unbalanced postings"):
        _balanced(postings)


def test_balanced_guard_passes_balanced_postings_through_unchanged() -> None:
    postings = [Posting("user:a", 7), Posting("user:b", -3), Posting(ADJUSTMENTS, -4)]

    assert _balanced(postings) is postings


@pytest.mark.parametrize(
    ("build", "credits"),
    [
        (purchase_postings, 0),
        (purchase_postings, -1),
        (debit_postings, 0),
        (adjustment_postings, 0),
    ],
)
def test_builders_refuse_amounts_that_move_nothing_or_the_wrong_way(
    build: Callable[[str, int], list[Posting]], credits: int
) -> None:
    with pytest.raises(ValueError, match="amount"):
        build("alice", credits)
