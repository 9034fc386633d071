from core.purchases.credit import CREDIT_UNIQUE_CONSTRAINTS, Credited, credit_in
from core.purchases.credit_metrics import CreditGroupsCollector
from core.purchases.duplicates import DuplicateAttempts
from core.purchases.grouped import CreditGroups
from core.purchases.intents import (
    Intent,
    IntentStatus,
    Precheck,
    expectation,
    format_token_amount,
    new_intent,
    precheck,
    rejection_closes_intent,
    solana_pay_url,
)
from core.purchases.recovery import (
    RECOVERY_ACTOR,
    Looked,
    Settle,
    SweepReport,
    deadline,
    expire,
    settle,
    sweep,
)
from core.purchases.reference import (
    Flights,
    payments_oldest_first,
    reference_payments,
    verify_by_reference,
)
from core.purchases.service import (
    StillPending,
    VerifyResult,
    create_intent,
    get_intent,
    partial_payment,
    verify_detected,
    verify_intent,
)
from core.purchases.settled import FreshIntents, SettledPairs
from core.purchases.store import insert

__all__ = [
    "CREDIT_UNIQUE_CONSTRAINTS",
    "RECOVERY_ACTOR",
    "CreditGroups",
    "CreditGroupsCollector",
    "Credited",
    "DuplicateAttempts",
    "Flights",
    "FreshIntents",
    "Intent",
    "IntentStatus",
    "Looked",
    "Precheck",
    "Settle",
    "SettledPairs",
    "StillPending",
    "SweepReport",
    "VerifyResult",
    "create_intent",
    "credit_in",
    "deadline",
    "expectation",
    "expire",
    "format_token_amount",
    "get_intent",
    "insert",
    "new_intent",
    "partial_payment",
    "payments_oldest_first",
    "precheck",
    "reference_payments",
    "rejection_closes_intent",
    "settle",
    "solana_pay_url",
    "sweep",
    "verify_by_reference",
    "verify_detected",
    "verify_intent",
]
