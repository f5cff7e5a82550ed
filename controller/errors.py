"""The one exception tree of Stepwise.

::

    StepwiseError
    ├── InvalidSpecError          terminal: the spec is wrong; set a condition, never retry
    ├── ConfigError               the controller's own settings are wrong; exit at start-up
    ├── LeadershipLostError       this replica lost its lease; stop writing at once
    └── ApiError                  the Kubernetes API answered with an error
        ├── NotFoundError         404
        ├── ConflictError         409 (stale resourceVersion, or already exists)
        ├── ForbiddenError        403 (RBAC)
        ├── InvalidError          422 (and 400: rejected by validation)
        └── TransientApiError     worth retrying with backoff
            ├── TooManyRequestsError  429, honours Retry-After
            ├── ServerError           5xx
            └── ApiUnavailableError   connection refused or reset, timeouts

:func:`from_status` maps an HTTP status (and Retry-After) onto the tree; the adapters
raise only these, so callers never catch a client library's exception.
"""

from __future__ import annotations


class StepwiseError(Exception):
    """Base of every error Stepwise raises on purpose."""


class InvalidSpecError(StepwiseError):
    """The spec cannot be acted on; ``problems`` are ``field: reason`` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class ConfigError(StepwiseError):
    """A controller setting is missing or wrong."""


class LeadershipLostError(StepwiseError):
    """This replica no longer holds the leader lease; it must not write."""


class ApiError(StepwiseError):
    """An error answer from the Kubernetes API server."""

    status: int = 0

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.reason = reason


class NotFoundError(ApiError):
    """404: the object (or its kind) does not exist."""

    status = 404


class ConflictError(ApiError):
    """409: a stale resourceVersion, or the object already exists."""

    status = 409


class ForbiddenError(ApiError):
    """403: RBAC does not allow the request."""

    status = 403


class InvalidError(ApiError):
    """422 or 400: the server's validation rejected the object."""

    status = 422


class TransientApiError(ApiError):
    """An error worth retrying after a backoff."""


class TooManyRequestsError(TransientApiError):
    """429: throttled by API priority and fairness; ``retry_after`` seconds if the server said."""

    status = 429

    def __init__(self, message: str, *, retry_after: float | None = None, reason: str = "") -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class ServerError(TransientApiError):
    """5xx: the server failed."""

    status = 500


class ApiUnavailableError(TransientApiError):
    """No answer: connection refused or reset, or a timeout."""

    status = 0


def from_status(
    status: int, message: str, *, reason: str = "", retry_after: float | None = None
) -> ApiError:
    """The error class for an HTTP status code."""
    if status == 404:
        return NotFoundError(message, reason=reason)
    if status == 409:
        return ConflictError(message, reason=reason)
    if status == 403:
        return ForbiddenError(message, reason=reason)
    if status in (400, 422):
        return InvalidError(message, status=status, reason=reason)
    if status == 429:
        return TooManyRequestsError(message, retry_after=retry_after, reason=reason)
    if status >= 500:
        return ServerError(message, status=status, reason=reason)
    if status == 0:
        return ApiUnavailableError(message, reason=reason)
    return ApiError(message, status=status, reason=reason)
