"""Public home of the SDK's exceptions (the official package's import path)."""

from ._exceptions import (
    AiriaAPIError,
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ExternalIdentityConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
    WebSocketClosedError,
)

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
]
