"""The Poco backend: an httpx client and the typed shapes it returns."""

from agent.backend.client import BackendClient
from agent.backend.models import (
    ACTIVE_RUN_STATUSES,
    ASK_USER_QUESTION,
    EXIT_PLAN_MODE,
    TERMINAL_RUN_STATUSES,
    TERMINAL_SESSION_STATUSES,
    UNFINISHED_RUN_STATUSES,
    InputRequest,
    Message,
    Option,
    Question,
    Run,
    Session,
    TaskRef,
)

__all__ = [
    "ACTIVE_RUN_STATUSES",
    "ASK_USER_QUESTION",
    "EXIT_PLAN_MODE",
    "TERMINAL_RUN_STATUSES",
    "TERMINAL_SESSION_STATUSES",
    "UNFINISHED_RUN_STATUSES",
    "BackendClient",
    "InputRequest",
    "Message",
    "Option",
    "Question",
    "Run",
    "Session",
    "TaskRef",
]
