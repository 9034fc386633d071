from core.ledger.debits import MAX_DEBIT, debit
from core.ledger.postings import (
    Entry,
    LedgerKind,
    Posting,
    adjustment_postings,
    debit_postings,
    purchase_postings,
)
from core.ledger.store import (
    POST_SQL,
    LedgerHealth,
    account_id,
    balance,
    health,
    lock_balance,
    post,
    recent_entries,
)

__all__ = [
    "MAX_DEBIT",
    "POST_SQL",
    "Entry",
    "LedgerHealth",
    "LedgerKind",
    "Posting",
    "account_id",
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
