from core.incidents.rules import (
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
from core.incidents.service import (
    add_note,
    close_incident,
    get,
    list_open,
    notes,
    open_incident,
    set_thread,
)

__all__ = [
    "Closeout",
    "Incident",
    "IncidentStatus",
    "add_note",
    "check_closeout",
    "check_note",
    "check_open",
    "check_title",
    "close_incident",
    "closeout",
    "get",
    "list_open",
    "notes",
    "open_incident",
    "pick_open",
    "set_thread",
]
