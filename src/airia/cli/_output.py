"""Rendering for the command line: tables for people, JSON for scripts."""

from __future__ import annotations

import argparse
import json
import shlex
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from .._exceptions import AiriaAPIError, ExternalIdentityConflictError
from ..types.api.conversations import (
    Attachment,
    ConversationEvent,
    ConversationFeedResponse,
    ConversationMessage,
    ExternalIdentity,
    GetConversationResponse,
    MessageCreatedEvent,
    MessagesTruncatedEvent,
    Participant,
    PresenceEvent,
    TypingEvent,
)


def to_json(model: BaseModel) -> str:
    return json.dumps(model.model_dump(mode="json", by_alias=True), indent=2)


def to_json_line(model: BaseModel) -> str:
    return json.dumps(model.model_dump(mode="json", by_alias=True), separators=(",", ":"))


# Server text is another user's: a raw line break would forge a table row or an
# event line (U+2028 and U+2029 are line breaks to many terminals and viewers), an
# ESC sequence would drive this terminal, a bidi control would reorder what is
# shown (the overrides and isolates, and the marks LRM, RLM and ALM). Each is shown
# as its escape (`\n`, `\x1b`, `\u202e`).
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNICODE_CONTROLS = [
    0x061C,  # ARABIC LETTER MARK
    0x200E,  # LEFT-TO-RIGHT MARK
    0x200F,  # RIGHT-TO-LEFT MARK
    0x2028,  # LINE SEPARATOR
    0x2029,  # PARAGRAPH SEPARATOR
    *range(0x202A, 0x202F),  # embeddings and overrides
    *range(0x2066, 0x206A),  # isolates
]
_INVISIBLE = {
    **{code: f"\\x{code:02x}" for code in [*range(0x20), *range(0x7F, 0xA0)]},
    **{code: f"\\u{code:04x}" for code in _UNICODE_CONTROLS},
    **{ord(char): escape for char, escape in _NAMED.items()},
}


def visible(text: str) -> str:
    """``text`` with its control characters (C0, DEL, C1), line and paragraph
    separators and bidi controls escaped."""
    return text.translate(_INVISIBLE)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return json.dumps(value) if value else "-"
    return visible(str(value))


def columns(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Rows aligned under their header, two spaces apart, no trailing blanks."""
    rows = [tuple(visible(cell) for cell in row) for row in rows]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def conversation_table(model: BaseModel) -> str:
    """Key/value lines for one conversation (or any model); messages, if any, listed after."""
    fields = {k: v for k, v in model if k not in ("messages", "message_count")}
    # An unknown field's name comes from the server too.
    fields.update({visible(k): v for k, v in (model.model_extra or {}).items()})
    width = max(len(k) for k in fields)
    lines = [f"{key.ljust(width)}  {_cell(value)}" for key, value in fields.items()]
    if isinstance(model, GetConversationResponse):
        shown, total = len(model.messages), model.message_count
        count = f"{total} (the newest {shown} below)" if total and total > shown else str(shown)
        lines.append(f"{'messages'.ljust(width)}  {count}")
        for message in model.messages:
            line = f"  {_cell(message.created_at)}  {message.role:<9}  {message.message or ''}"
            lines.append(visible(line))
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
    lines = columns(header, rows)
    lines.append(f"page {page_number}, {len(feed.items)} of {feed.total_count}")
    return "\n".join(lines)


def messages_table(
    messages: list[ConversationMessage], next_cursor: str | None, order: str | None = None
) -> str:
    """One message a row; when there are more, a footer with the options of the next
    page (the cursor marks a place, and is read in the order given with it)."""
    header = ("MESSAGE ID", "CREATED", "ROLE", "USER", "MESSAGE")
    rows = [
        (m.id, _cell(m.created_at), m.role, _cell(m.user_id), m.message or "") for m in messages
    ]
    lines = columns(header, rows)
    footer = f"{len(messages)} message" + ("" if len(messages) == 1 else "s")
    if next_cursor:
        footer += f", next page: --order {order or 'asc'} --cursor {visible(next_cursor)}"
    lines.append(footer)
    return "\n".join(lines)


def participants_table(participants: list[Participant]) -> str:
    header = ("USER ID", "USERNAME", "ROLE", "SHARED AT", "SHARED BY")
    rows = [
        (p.user_id, _cell(p.username), p.role, _cell(p.shared_at), _cell(p.shared_by_user_id))
        for p in participants
    ]
    return "\n".join(columns(header, rows))


def identities_table(identities: list[ExternalIdentity]) -> str:
    header = ("IDENTITY ID", "SYSTEM", "CHANNEL", "THREAD", "CREATED")
    rows = [
        (
            i.id,
            i.external_system,
            i.external_channel_id,
            i.external_thread_id,
            _cell(i.created_at),
        )
        for i in identities
    ]
    return "\n".join(columns(header, rows))


def human_size(size: int | None) -> str:
    """``512 B``, ``1.5 KiB``, ``25.0 MiB``."""
    if size is None:
        return "-"
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} TiB"


def attachments_table(attachments: list[Attachment]) -> str:
    """One attachment a row; the signed URLs are long, so only ``--json`` shows them."""
    header = ("BLOB ID", "FILE NAME", "CONTENT TYPE", "SIZE", "SOURCE", "CREATED")
    rows = [
        (
            a.blob_id,
            _cell(a.file_name),
            _cell(a.content_type),
            human_size(a.size),
            _cell(a.source),
            _cell(a.created_at),
        )
        for a in attachments
    ]
    return "\n".join(columns(header, rows))


def _event_summary(event: ConversationEvent) -> str:
    if isinstance(event, MessageCreatedEvent):
        m = event.data
        return f"{m.role} {_cell(m.user_id)}: {m.message or ''}".rstrip()
    if isinstance(event, MessagesTruncatedEvent):
        t = event.data
        return f"from {t.from_message_id}: {t.deleted_count} deleted, {t.remaining_count} remain"
    if isinstance(event, TypingEvent):
        return f"{_cell(event.data.user_id)} {'is typing' if event.data.is_typing else 'stopped'}"
    if isinstance(event, PresenceEvent):
        return f"{_cell(event.data.user_id)} {event.data.action}"
    if isinstance(event.data, Participant):
        return f"{event.data.user_id} {event.data.role}"
    return json.dumps(event.data, separators=(",", ":"), default=str) if event.data else ""


def event_line(event: ConversationEvent) -> str:
    """``TIME  #SEQ  TYPE  SUMMARY`` for one real-time event (``-`` for no sequence)."""
    sequence = f"#{event.sequence}" if event.sequence is not None else "-"
    line = f"{_cell(event.created_at)}  {sequence}  {event.type}  {_event_summary(event)}"
    return visible(line.rstrip())


def key_option(parser: argparse.ArgumentParser) -> None:
    """``--idempotency-key`` of a write that sends one: the key its error line names
    when it may have been done, so that a re-run with it is done once."""
    parser.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="Idempotency-Key to send (default: a fresh one); to re-run a write that failed",
    )


def error_line(error: AiriaAPIError) -> str:
    """One line for stderr: ``error: 404 Not Found: Conversation not found (correlation id …)``."""
    if error.status_code is None:  # no HTTP status: connection errors, closed WebSockets
        text = error.message
    else:
        reason = error.response.reason_phrase if error.response is not None else ""
        text = f"{error.status_code} {reason}".strip()
        if error.message and error.message != reason:
            text += f": {error.message}"
        detail = error.body.get("detail") if isinstance(error.body, dict) else None
        if isinstance(detail, str) and detail and detail != error.message:
            text += f" ({detail})"
        if isinstance(error, ExternalIdentityConflictError):
            existing = error.existing_conversation_id
            if existing not in text:  # the server's detail may already name it
                text += f" (conversation {existing})"
    if error.correlation_id:
        text += f" (correlation id {error.correlation_id})"
    if error.idempotency_key is not None and _maybe_done(error):
        again = shlex.quote(error.idempotency_key)
        text += (
            f"; it may have been done: re-run with --idempotency-key {again} to have it done once"
        )
    return f"error: {visible(text)}"


def _maybe_done(error: AiriaAPIError) -> bool:
    """Whether a write that failed so may have been done all the same: no answer came,
    the server failed (5xx), or it was still running the first attempt (409 with
    Retry-After). Re-run with a new key, it could then be done twice."""
    if error.status_code is None or error.status_code >= 500:
        return True
    running = error.response is not None and "retry-after" in error.response.headers
    return error.status_code == 409 and running
