"""Rendering for the command line: tables for people, JSON for scripts."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from .._exceptions import AiriaAPIError, APIConnectionError
from ..types.api.conversations import ConversationFeedResponse, GetConversationResponse


def to_json(model: BaseModel) -> str:
    return json.dumps(model.model_dump(mode="json", by_alias=True), indent=2)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return json.dumps(value) if value else "-"
    return str(value)


def conversation_table(model: BaseModel) -> str:
    """Key/value lines for one conversation; messages, if any, listed after."""
    fields = {k: v for k, v in model if k != "messages"}
    fields.update(model.model_extra or {})
    width = max(len(k) for k in fields)
    lines = [f"{key.ljust(width)}  {_cell(value)}" for key, value in fields.items()]
    if isinstance(model, GetConversationResponse):
        lines.append(f"{'messages'.ljust(width)}  {len(model.messages)}")
        for message in model.messages:
            lines.append(
                f"  {_cell(message.created_at)}  {message.role:<9}  {message.message or ''}"
            )
    return "\n".join(lines)


def feed_table(feed: ConversationFeedResponse, page_number: int) -> str:
    """Aligned columns, one conversation a row, and a "page N, M of TOTAL" footer."""
    header = ("CONVERSATION ID", "TITLE", "USER", "MESSAGES", "UPDATED", "BOOKMARKED")
    rows = [
        (
            item.conversation_id,
            _cell(item.title),
            _cell(item.user_id),
            str(item.message_count),
            _cell(item.updated_at),
            _cell(item.is_bookmarked),
        )
        for item in feed.items
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.append(f"page {page_number}, {len(feed.items)} of {feed.total_count}")
    return "\n".join(lines)


def error_line(error: AiriaAPIError) -> str:
    """One line for stderr: ``error: 404 Not Found: Conversation not found (correlation id …)``."""
    if isinstance(error, APIConnectionError):
        text = error.message
    else:
        reason = error.response.reason_phrase if error.response is not None else ""
        text = f"{error.status_code} {reason}".strip()
        if error.message and error.message != reason:
            text += f": {error.message}"
        detail = error.body.get("detail") if isinstance(error.body, dict) else None
        if isinstance(detail, str) and detail and detail != error.message:
            text += f" ({detail})"
    if error.correlation_id:
        text += f" (correlation id {error.correlation_id})"
    return f"error: {text}"
