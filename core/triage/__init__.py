from core.triage.chain import chain_facts
from core.triage.diagnosis import DiagnosisKind, TriageReport
from core.triage.evidence import (
    AttemptFacts,
    BalanceFacts,
    ChainFacts,
    ChainStatus,
    Evidence,
    IntentFacts,
    LedgerFacts,
    Subject,
    SubjectKind,
    classify_subject,
)
from core.triage.rules import diagnose
from core.triage.service import triage, triage_window
from core.triage.store import gather, window_summary
from core.triage.window import (
    AttemptSummaryRow,
    FailingUsers,
    Scope,
    Window,
    WindowSummary,
    parse_window,
    summarise,
)

__all__ = [
    "AttemptFacts",
    "AttemptSummaryRow",
    "BalanceFacts",
    "ChainFacts",
    "ChainStatus",
    "DiagnosisKind",
    "Evidence",
    "FailingUsers",
    "IntentFacts",
    "LedgerFacts",
    "Scope",
    "Subject",
    "SubjectKind",
    "TriageReport",
    "Window",
    "WindowSummary",
    "chain_facts",
    "classify_subject",
    "diagnose",
    "gather",
    "parse_window",
    "summarise",
    "triage",
    "triage_window",
    "window_summary",
]
