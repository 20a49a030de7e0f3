"""The exception tree of poco-im-agent.

    AgentError
    ├── ConfigError          a bad configuration value (names the variable and the fix)
    ├── InstanceLockedError  another instance already runs on this data dir
    ├── StoreError           the local database cannot be opened, migrated or written
    ├── BackendError         the Poco backend failed or refused
    │   ├── BackendUnavailable   network error, timeout, 5xx: retry later
    │   ├── BackendUnauthorized  401: BACKEND_INTERNAL_TOKEN missing or wrong
    │   ├── BackendNotFound      code 40400 (HTTP 400 or 404 by generation)
    │   ├── BackendForbidden     code 40300 (HTTP 400 or 403)
    │   └── BackendRejected      any other 4xx code (40000 ...) or a 422
    │       └── BackendRouteMissing  no such route (an older backend)
    ├── FileTooLarge         a file over a limit (the platform's, IM_MAX_FILE_MB, the backend's)
    └── DeliveryError        a chat platform refused or failed a send
        ├── RetryLater           429 / 5xx / network: carries `retry_after` seconds
        ├── PermanentDeliveryError  chat not found, bot blocked, bad request: give up
        ├── ProviderConflict     409: another poller or a webhook holds the token
        └── ChatMoved            the chat lives on under `new_chat_id` (Telegram supergroup)

Library errors become these at the boundary (backend client, each provider);
`core/` catches only these; only `cli` maps them to exit codes.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error poco-im-agent raises on purpose."""


class ConfigError(AgentError):
    def __init__(self, variable: str, problem: str, fix: str) -> None:
        self.variable = variable
        self.problem = problem
        self.fix = fix
        super().__init__(f"{variable}: {problem}. {fix}")


class InstanceLockedError(AgentError):
    def __init__(self, lock_path: str) -> None:
        self.lock_path = lock_path
        super().__init__(
            f"another poco-im-agent is already running with this data dir (lock: {lock_path}). "
            "Stop it first, or set IM_DATA_DIR to run a second one."
        )


class StoreError(AgentError):
    pass


class BackendError(AgentError):
    def __init__(self, message: str, *, status: int | None = None, code: int | None = None) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class BackendUnavailable(BackendError):
    pass


class BackendUnauthorized(BackendError):
    """The backend wants authentication: BACKEND_INTERNAL_TOKEN is missing or wrong."""


class BackendNotFound(BackendError):
    pass


class BackendForbidden(BackendError):
    pass


class BackendRejected(BackendError):
    pass


class BackendRouteMissing(BackendRejected):
    """A 404 without an envelope: this backend generation has no such route."""


class FileTooLarge(AgentError):
    """A file over `limit` bytes; `size` when known."""

    def __init__(self, message: str, *, limit: int, size: int | None = None) -> None:
        self.limit = limit
        self.size = size
        super().__init__(message)


class DeliveryError(AgentError):
    def __init__(self, message: str, *, provider: str) -> None:
        self.provider = provider
        super().__init__(message)


class RetryLater(DeliveryError):
    def __init__(
        self,
        message: str,
        *,
        provider: str,
        retry_after: float | None = None,
        parts_sent: int = 0,
    ) -> None:
        self.retry_after = retry_after
        # Of a long message split into parts, how many went out before this failure.
        self.parts_sent = parts_sent
        super().__init__(message, provider=provider)


class PermanentDeliveryError(DeliveryError):
    pass


class ProviderConflict(DeliveryError):
    pass


class ChatMoved(DeliveryError):
    """The chat got a new id (a Telegram group upgraded to a supergroup): move and resend."""

    def __init__(self, message: str, *, provider: str, new_chat_id: str) -> None:
        self.new_chat_id = new_chat_id
        super().__init__(message, provider=provider)
