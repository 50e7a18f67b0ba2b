"""Domain errors. Each carries its HTTP status; one handler turns them into problem+json."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    status = 500
    title = "Internal Server Error"

    def __init__(self, message: str, detail: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or message
        self.extra = extra
        self.headers: dict[str, str] = {}


class BadRequest(AppError):
    status = 400
    title = "Bad Request"


class Unauthorized(AppError):
    status = 401
    title = "Unauthorized"


class Forbidden(AppError):
    status = 403
    title = "Forbidden"


class NotFound(AppError):
    status = 404
    title = "Not Found"


class MethodNotAllowed(AppError):
    status = 405
    title = "Method Not Allowed"


class Conflict(AppError):
    status = 409
    title = "Conflict"


class PayloadTooLarge(AppError):
    status = 413
    title = "Content Too Large"


class UnsupportedMediaType(AppError):
    status = 415
    title = "Unsupported Media Type"


class UpgradeRequired(AppError):
    status = 426
    title = "Upgrade Required"

    def __init__(self, message: str, detail: str | None = None, **extra: Any) -> None:
        super().__init__(message, detail, **extra)
        self.headers = {"Upgrade": "websocket", "Connection": "Upgrade"}


class ValidationFailed(AppError):
    status = 422
    title = "Unprocessable Content"


def conversation_not_found(conversation_id: str) -> NotFound:
    return NotFound("Conversation not found", f"Conversation {conversation_id[:100]} was not found")
