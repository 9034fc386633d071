from core.ledger.debits import MAX_DEBIT, debit
from core.ledger.postings import (
    Entry,
    LedgerKey,
    LedgerKind,
    Posting,
    adjustment_postings,
    debit_postings,
    purchase_postings,
)
from core.ledger.store import (
    ONCE_CONSTRAINT,
    LedgerHealth,
    balance,
    health,
    lock_balance,
    post,
    recent_entries,
)

__all__ = [
    "MAX_DEBIT",
    "ONCE_CONSTRAINT",
    "Entry",
    "LedgerHealth",
    "LedgerKey",
    "LedgerKind",
    "Posting",
    "adjustment_postings",
    "balance",
    "debit",
    "debit_postings",
    "health",
    "lock_balance",
    "post",
    "purchase_postings",
    "recent_entries",
]
