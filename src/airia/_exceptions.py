"""The exception hierarchy and the one function that maps a response to it.

Everything the SDK raises for a failed call is an ``AiriaAPIError``, so the
seed's ``except AiriaAPIError as e: if e.status_code == 404`` keeps working,
and callers that want finer control catch a subclass instead.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

__all__ = [
    "APIConnectionError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AiriaAPIError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "ExternalIdentityConflictError",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "UnprocessableEntityError",
    "WebSocketClosedError",
    "make_status_error",
]


class AiriaAPIError(Exception):
    """Base of every error raised by the SDK for a failed API call.

    Attributes:
        status_code: HTTP status of the response; ``None`` when no response
            arrived (connection errors and timeouts).
        message: Short human message, taken from the body's ``message`` (or
            ``error``) member when the server sent one.
        detailed_message: The raw response body text.
        body: The parsed JSON body, or ``None`` if it was not JSON.
        correlation_id: The ``X-Correlation-ID`` of the failed request.
        response: The ``httpx.Response``, when there was one.
        idempotency_key: The ``Idempotency-Key`` the request carried, else ``None``.
            A keyed write that failed without a definite answer (no response, a
            timeout, a 5xx, a 409 still running) may have been done: calling it again
            with ``idempotency_key=e.idempotency_key`` has it done exactly once.
    """

    def __init__(
        self,
        status_code: int | None,
        message: str,
        detailed_message: str = "",
        *,
        body: Any = None,
        correlation_id: str | None = None,
        response: httpx.Response | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        super().__init__(status_code, message, detailed_message)
        self.status_code = status_code
        self.message = message
        self.detailed_message = detailed_message
        self.body = body
        self.correlation_id = correlation_id
        self.response = response
        self.idempotency_key = idempotency_key

    def __str__(self) -> str:
        return f"{self.status_code}: {self.message} - {self.detailed_message}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its attributes, not by calling the class with `args`: the
        # subclasses' constructors take other arguments, and an error must survive
        # pickling (a process pool sends it to the parent) and `copy.deepcopy`.
        return (_restore, (type(self), self.args, self.__dict__))


def _restore(cls: type[AiriaAPIError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class APIStatusError(AiriaAPIError):
    """The server answered with a 4xx or 5xx status."""


class BadRequestError(APIStatusError):
    """400: the request was malformed."""


class AuthenticationError(APIStatusError):
    """401: missing or invalid API key or bearer token."""


class PermissionDeniedError(APIStatusError):
    """403: the caller may see the conversation but not change it."""


class NotFoundError(APIStatusError):
    """404: no visible conversation (or other resource) with that id."""


class ConflictError(APIStatusError):
    """409: the request conflicts with the current state."""


class ExternalIdentityConflictError(ConflictError):
    """409 naming the conversation that already holds what was being added.

    Raised by ``add_external_identity`` when the (system, channel, thread)
    triple is already mapped in the tenant; ``existing_conversation_id`` is the
    conversation it points to (also ``body["conversationId"]``).
    """

    @property
    def existing_conversation_id(self) -> str:
        return self.body["conversationId"]


class UnprocessableEntityError(APIStatusError):
    """422: validation failed; ``errors`` lists the problems when the server sent them."""

    @property
    def errors(self) -> list[Any]:
        if isinstance(self.body, dict) and isinstance(self.body.get("errors"), list):
            return self.body["errors"]
        return []


class RateLimitError(APIStatusError):
    """429: too many requests; ``retry_after`` is the server's hint in seconds."""

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.response.headers if self.response is not None else {})


class InternalServerError(APIStatusError):
    """5xx: the server failed."""


class APIConnectionError(AiriaAPIError):
    """No response arrived: connection refused, reset, DNS failure and the like.

    ``status_code`` is ``None``; it is still an ``AiriaAPIError`` so one
    ``except AiriaAPIError`` covers every failed call.
    """

    def __init__(
        self,
        message: str,
        *,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        super().__init__(
            None, message, "", correlation_id=correlation_id, idempotency_key=idempotency_key
        )

    def __str__(self) -> str:
        return self.message


class APITimeoutError(APIConnectionError):
    """The request timed out."""


class WebSocketClosedError(AiriaAPIError):
    """The real-time channel closed and will not be reopened.

    Raised for close code 1008 (the server refused the socket or the caller
    lost access), for a drop when reconnecting is off, and when reconnecting
    gave up. ``status_code`` is ``None``; ``close_code`` and ``close_reason``
    are what the server sent (1006 when the connection dropped without a
    close frame).
    """

    def __init__(self, message: str, *, close_code: int | None, close_reason: str = "") -> None:
        super().__init__(None, message, close_reason)
        self.close_code = close_code
        self.close_reason = close_reason

    def __str__(self) -> str:
        return self.message


class APIResponseValidationError(AiriaAPIError):
    """A success response whose body does not have the documented shape."""


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), else None."""
    value = headers.get("retry-after") if headers else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from datetime import datetime, timezone
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def make_status_error(
    response: httpx.Response,
    *,
    correlation_id: str | None,
    redact: Any = None,
    idempotency_key: str | None = None,
) -> APIStatusError:
    """Build the exception for an error response: class by status, message from the body;
    ``idempotency_key`` is the key the request carried."""
    text = response.text
    if redact is not None:
        # Before parsing, so that `body` holds no credential the server echoed either.
        text = redact(text)
    try:
        body: Any = json.loads(text) if text else None
    except ValueError:
        body = None

    message = None
    if isinstance(body, dict):
        message = body.get("message") or body.get("error") or body.get("title")
        correlation_id = body.get("correlationId") or correlation_id
    if not isinstance(message, str) or not message:
        message = response.reason_phrase or "API request failed"
    correlation_id = response.headers.get("x-correlation-id") or correlation_id

    if redact is not None:
        message = redact(message)

    status = response.status_code
    cls = _STATUS_CLASSES.get(status) or (InternalServerError if status >= 500 else APIStatusError)
    if status == 409 and isinstance(body, dict) and isinstance(body.get("conversationId"), str):
        cls = ExternalIdentityConflictError
    return cls(
        status,
        message,
        text,
        body=body,
        correlation_id=correlation_id,
        response=response,
        idempotency_key=idempotency_key,
    )
