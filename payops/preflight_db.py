"""`payops preflight`'s database checks, pure: the schema, the seed, the ledger's
invariants and the verify gate as read from the database."""

from __future__ import annotations

from collections.abc import Collection

from core.gate import GateState
from core.ledger import LedgerHealth
from payops.preflight_checks import GATE_SWITCHES, SYSTEM_ACCOUNTS, Check, Status


def schema_check(applied: Collection[int], latest: int) -> Check:
    """Every migration of this payops applied; a newer schema is a warning (a rollback)."""
    current = max(applied, default=0)
    missing = sorted(set(range(1, latest + 1)) - set(applied))
    if missing:
        return Check(
            "database",
            "schema",
            Status.FAIL,
            f"at version {current}; this payops needs {latest} (missing "
            f"{', '.join(map(str, missing))})",
            "run `payops migrate` (docker run ... IMAGE migrate) before the new version serves",
        )
    if current > latest:
        return Check(
            "database",
            "schema",
            Status.WARN,
            f"at version {current}, newer than this payops ({latest}): fine for a rollback of "
            "one release (docs/MIGRATIONS.md), otherwise deploy the newer image",
            "check that this is the image you mean to deploy",
        )
    return Check("database", "schema", Status.OK, f"version {current} (the latest)")


def seed_check(system_accounts: Collection[str], switches: Collection[str]) -> Check:
    """The seed's system accounts and gate switches exist."""
    missing = [a for a in SYSTEM_ACCOUNTS if a not in system_accounts]
    missing += [f"gate switch {s}" for s in GATE_SWITCHES if s not in switches]
    if missing:
        return Check(
            "database",
            "seed",
            Status.FAIL,
            f"missing: {', '.join(missing)}",
            "run `payops migrate` (it applies the seed, idempotently)",
        )
    return Check(
        "database",
        "seed",
        Status.OK,
        f"system accounts {', '.join(SYSTEM_ACCOUNTS)}; gate switches {', '.join(GATE_SWITCHES)}",
    )


def ledger_check(health: LedgerHealth) -> Check:
    """The ledger's invariants hold (core/ledger_db.health)."""
    if health.ok:
        return Check(
            "database",
            "ledger",
            Status.OK,
            "entries sum to 0, every transaction balances, cached balances match their entries",
        )
    return Check(
        "database",
        "ledger",
        Status.FAIL,
        f"entries sum to {health.total}; {health.unbalanced_transactions} unbalanced "
        f"transaction(s); {health.balance_mismatches} cached balance(s) off",
        "do not deploy on a broken ledger: `/pay-recon`, `/pay-triage`, then repair "
        "(docs/OPERATIONS.md, Reconciliation)",
    )


def gate_check(state: GateState) -> Check:
    """A closed switch is worth a warning, not a failure: it may be closed on purpose."""
    closed = [s for s in (state.verify, state.client_retries) if not s.is_open]
    if not closed:
        return Check("database", "gate", Status.OK, "verify open, client_retries open")
    detail = "; ".join(f"{s.name.value} CLOSED by {s.changed_by}: {s.reason}" for s in closed)
    return Check(
        "database",
        "gate",
        Status.WARN,
        detail,
        "intended during an incident; otherwise `/pay-smoke` then `/pay-gate open` "
        "(and `/pay-gate resume-retries`) after the deploy",
    )
