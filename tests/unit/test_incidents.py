"""Pure incident rules: titles, notes, the runbook's closeout, which incident is meant."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.errors import Conflict, InvalidInput, NotFound
from core.incidents import (
    Closeout,
    Incident,
    IncidentStatus,
    check_closeout,
    check_note,
    check_open,
    check_title,
    closeout,
    pick_open,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
FULL = {
    "root_cause": "verify retried without the row lock",
    "affected_users": "alice, bob",
    "corrective_action": "reversed 2 duplicate credits",
    "prevention_action": "lock the intent row before crediting",
}


def _incident(id_: int = 1, status: IncidentStatus = IncidentStatus.OPEN) -> Incident:
    return Incident(id_, f"incident {id_}", status, "OC1", NOW, None, None, None, None, None)


def test_closeout_with_all_four_parts() -> None:
    assert closeout(**{k: f"  {v} " for k, v in FULL.items()}) == Closeout(**FULL)


@pytest.mark.parametrize("missing", sorted(FULL))
@pytest.mark.parametrize("empty", [None, "", "   "])
def test_closeout_names_the_missing_part(missing: str, empty: str | None) -> None:
    with pytest.raises(InvalidInput) as caught:
        closeout(**{**FULL, missing: empty})
    assert caught.value.code == "closeout_incomplete"
    assert missing.replace("_", " ") in caught.value.message
    others = [k.replace("_", " ") for k in FULL if k != missing]
    assert not any(o in caught.value.message.split("missing:")[1] for o in others)


def test_closeout_names_every_missing_part() -> None:
    with pytest.raises(InvalidInput, match="root cause, affected users, prevention action"):
        closeout(root_cause="", affected_users=None, corrective_action="x", prevention_action=" ")


def test_closeout_built_directly_is_checked_again() -> None:
    with pytest.raises(InvalidInput, match="corrective action"):
        check_closeout(Closeout(**{**FULL, "corrective_action": ""}))


def test_closeout_parts_have_a_length_limit() -> None:
    with pytest.raises(InvalidInput, match="root cause"):
        closeout(**{**FULL, "root_cause": "x" * 4001})


@pytest.mark.parametrize("title", ["", "   ", "x" * 201])
def test_title_is_required_and_bounded(title: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_title(title)
    assert caught.value.code == "invalid_title"


def test_title_and_note_are_trimmed() -> None:
    assert check_title("  duplicate credits  ") == "duplicate credits"
    assert check_note(" gated verify ") == "gated verify"


@pytest.mark.parametrize("text", ["", "  ", "x" * 4001])
def test_note_is_required_and_bounded(text: str) -> None:
    with pytest.raises(InvalidInput):
        check_note(text)


def test_closed_incident_takes_no_more_changes() -> None:
    check_open(_incident())
    with pytest.raises(Conflict) as caught:
        check_open(_incident(status=IncidentStatus.CLOSED))
    assert caught.value.code == "incident_closed"


def test_pick_open_needs_exactly_one() -> None:
    assert pick_open([_incident(4)]).id == 4
    with pytest.raises(NotFound) as none:
        pick_open([])
    assert none.value.code == "no_open_incident"
    with pytest.raises(Conflict) as several:
        pick_open([_incident(4), _incident(5)])
    assert several.value.code == "several_open_incidents"
    assert "#4" in several.value.message
    assert "#5" in several.value.message
