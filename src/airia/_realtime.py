"""Everything the sync and async event streams share: all of it does no I/O.

What to do after each close code, how long to wait before reconnecting,
how to build the resume URL, and which frames to deliver live here, so that
``EventStream`` and ``AsyncEventStream`` differ only in how they connect,
receive and wait.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pydantic
from websockets.exceptions import InvalidStatus, WebSocketException

from ._constants import (
    CLOSE_ABNORMAL,
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CLOSE_RESUME,
    RECONNECT_INITIAL_DELAY,
    RECONNECT_MAX_DELAY,
    RETRYABLE_STATUS_CODES,
)
from ._exceptions import (
    AiriaAPIError,
    APIConnectionError,
    APIStatusError,
    WebSocketClosedError,
    make_status_error,
)
from .types.api.conversations import ConversationEvent, parse_event

Action = Literal["stop", "fail", "resume", "reconnect"]


def close_action(code: int | None) -> Action:
    """What a close code asks of the client.

    ``stop``: the conversation is gone (1000). ``fail``: refused or access
    removed (1008). ``resume``: the client fell behind, or resumed past the
    last stored event (4000); reconnect at once, after the sequence the reason
    names (see ``resume_point``). ``reconnect``: anything else, the server
    going away (1001) and a dropped connection (1006 or ``None``) included.

    Example:
        ```python
        assert close_action(4000) == "resume"
        ```
    """
    if code == CLOSE_NORMAL:
        return "stop"
    if code == CLOSE_POLICY_VIOLATION:
        return "fail"
    if code == CLOSE_RESUME:
        return "resume"
    return "reconnect"


def backoff_delay(attempt: int) -> float:
    """Seconds before reconnect number ``attempt`` (0-based): doubling, capped, jittered.

    The jitter takes off up to half, so clients dropped together (a server
    restart) do not all come back in the same instant.
    """
    delay = min(RECONNECT_MAX_DELAY, RECONNECT_INITIAL_DELAY * 2**attempt)
    return delay * (1 - 0.5 * random.random())


@dataclass(frozen=True)
class Step:
    """The decision after a close or a failed connect: ``reconnect`` after ``delay``,
    ``stop`` quietly, or ``fail`` with an error."""

    action: Literal["stop", "fail", "reconnect"]
    delay: float = 0.0
    reason: str = ""


def plan_after_close(
    code: int | None, attempt: int, *, reconnect: bool, max_attempts: int | None
) -> Step:
    """Decide what follows a close with ``code`` (``None``: the connection failed).

    ``attempt`` counts reconnects since the last successful open.

    Example:
        ```python
        plan_after_close(1001, 0, reconnect=True, max_attempts=None)  # Step("reconnect", ~0.4)
        plan_after_close(1008, 0, reconnect=True, max_attempts=None)  # Step("fail", ...)
        ```
    """
    action = close_action(code)
    if action == "stop":
        return Step("stop")
    if action == "fail":
        return Step("fail", reason="the server refused the connection or access was removed")
    if not reconnect:
        if code in (CLOSE_GOING_AWAY, CLOSE_RESUME):
            return Step("stop")
        return Step("fail", reason="the connection dropped and reconnect is off")
    if max_attempts is not None and attempt >= max_attempts:
        return Step("fail", reason=f"gave up after {attempt} reconnect attempts")
    if action == "resume" and attempt == 0:
        return Step("reconnect", 0.0)
    return Step("reconnect", backoff_delay(attempt))


_RESUME_REASON = re.compile(r"resume after=(\d{1,20})")


def resume_point(reason: str) -> int | None:
    """The sequence a 4000 close's reason says to resume after (``resume after=N``).

    After a fall-behind it is the last event the server sent; after an ``after``
    past the last stored event, where the server's history ends (a database
    restored from an older backup, say), which may be below what the client has
    seen. Resuming with the old ``after`` would be refused again, forever.

    Example:
        ```python
        assert resume_point("resume after=41") == 41
        assert resume_point("going away") is None
        ```
    """
    match = _RESUME_REASON.fullmatch(reason)
    return int(match.group(1)) if match else None


def resume_url(websocket_url: str, after: int | None) -> str:
    """``websocket_url`` with ``after=<after>`` set (replacing any), other parameters kept.

    Example:
        ```python
        resume_url("ws://h/v1/Conversations/c/ws?ticket=t", 41)
        # 'ws://h/v1/Conversations/c/ws?ticket=t&after=41'
        ```
    """
    if after is None:
        return websocket_url
    parts = urlsplit(websocket_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "after"]
    query.append(("after", str(after)))
    return urlunsplit(parts._replace(query=urlencode(query)))


USER_ID_MAX = 255


def signal_user_id(user_id: str) -> str:
    """``user_id`` checked as the server checks a frame's ``userId``: 1 to 255
    characters, no NUL, and text that UTF-8 can carry (no lone surrogate).

    Raises ValueError before anything is sent: the server would answer an error
    frame, which the stream reads as no event at all, so the signal would be lost
    without a word.
    """
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= USER_ID_MAX:
        raise ValueError(f"user_id must be 1 to {USER_ID_MAX} characters, not {user_id!r:.80}")
    if "\x00" in user_id:
        raise ValueError("user_id must not hold NUL characters")
    try:
        user_id.encode()
    except UnicodeEncodeError:
        raise ValueError("user_id must be text UTF-8 can encode (no lone surrogates)") from None
    return user_id


def redact_url(url: str) -> str:
    """The URL without its query: the ticket in it is a credential."""
    return urlunsplit(urlsplit(url)._replace(query="", fragment=""))


def connect_error(exc: Exception) -> AiriaAPIError:
    """The SDK error for a failed connect: a REST error as is, a rejected handshake by
    status (403 is a refusal), anything else an ``APIConnectionError``."""
    if isinstance(exc, AiriaAPIError):
        return exc
    if isinstance(exc, InvalidStatus):
        answer = exc.response
        response = httpx.Response(
            answer.status_code,
            headers=list(answer.headers.raw_items()),
            content=bytes(answer.body or b""),
            request=httpx.Request("GET", "ws://websocket"),
        )
        return make_status_error(response, correlation_id=None)
    return APIConnectionError(f"Could not open the real-time channel: {exc or type(exc).__name__}")


def is_transient(error: AiriaAPIError) -> bool:
    """Whether a failed connect is worth another try (a 401, 403 or 404 is not)."""
    if isinstance(error, APIStatusError):
        return error.status_code in RETRYABLE_STATUS_CODES or (error.status_code or 0) >= 500
    return isinstance(error, APIConnectionError)


CONNECT_ERRORS = (AiriaAPIError, OSError, WebSocketException, TimeoutError, asyncio.TimeoutError)
"""What opening the channel may raise: the REST call for the URL, the socket, the handshake."""


class BaseEventStream:
    """State of one watch of a conversation: last sequence, attempts, whether it is over."""

    def __init__(
        self,
        conversation_id: str,
        *,
        after: int | None,
        reconnect: bool,
        max_reconnect_attempts: int | None,
        logger: logging.Logger,
        log_requests: bool,
    ) -> None:
        self.conversation_id = conversation_id
        self.last_sequence = after
        """The sequence of the last event delivered; until one is, ``after``, or
        else the conversation's last stored event when the stream first connected."""
        self.close_code: int | None = None
        """The code of the last close received, once there was one."""
        self.reconnect = reconnect
        self.max_reconnect_attempts = max_reconnect_attempts
        self._attempt = 0
        self._resumed_at: int | None = None
        """Where the last 4000 close said to resume: another saying the same means the
        socket between delivered nothing, and reconnecting at once would spin."""
        self._stalled_resumes = 0
        self._last_reason = ""
        self._opened_once = False
        self._finished = False
        self._logger = logger
        self._log_requests = log_requests

    def _socket_url(self, websocket_url: str, minted_sequence: int | None = None) -> str:
        """The URL to open: ``websocket_url`` resuming after the last sequence delivered.

        ``minted_sequence`` is the last stored event when the URL was minted. A
        stream with nothing to resume from yet starts there, so that what is
        stored before its first event, during a reconnect too, is not lost. None
        (a server without ``lastSequence``) leaves it at "from now on".
        """
        if self.last_sequence is None:
            self.last_sequence = minted_sequence
        return resume_url(websocket_url, self.last_sequence)

    def _on_open(self, url: str) -> None:
        self._attempt = 0
        self._opened_once = True
        self._log("real-time channel open: %s after=%s", redact_url(url), self.last_sequence)

    def _accept(self, text: str | bytes) -> ConversationEvent | None:
        """The event to deliver for a frame, or None to skip it (a duplicate or not an event)."""
        try:
            payload: Any = json.loads(text)
            event = parse_event(payload)
        except (ValueError, TypeError, AttributeError, pydantic.ValidationError):
            self._log("real-time frame skipped: not an event")
            return None
        if event.sequence is not None:
            if self.last_sequence is not None and event.sequence <= self.last_sequence:
                return None
            self.last_sequence = event.sequence
        if event.type == "conversation.deleted":
            self._finished = True
        return event

    def _on_close(self, code: int | None, reason: str) -> float:
        """Seconds to wait before reconnecting after a close; raises when it must not."""
        self.close_code = code
        self._last_reason = reason
        attempt = self._attempt
        if code == CLOSE_RESUME:
            attempt = max(attempt, self._resume_from(reason))
        step = plan_after_close(
            code,
            attempt,
            reconnect=self.reconnect,
            max_attempts=self.max_reconnect_attempts,
        )
        self._log("real-time channel closed: code=%s reason=%r -> %s", code, reason, step.action)
        if step.action == "stop":
            self._finished = True
        elif step.action == "fail":
            self._finished = True
            raise WebSocketClosedError(
                f"Real-time channel closed ({code}): {step.reason}",
                close_code=code,
                close_reason=reason,
            )
        self._attempt += 1
        return step.delay

    def _resume_from(self, reason: str) -> int:
        """Take a 4000 close's resume point; return how many 4000 closes in a row said
        it without an event between (each counts as a failed reconnect)."""
        point = resume_point(reason)
        if point is not None:
            # Below what was delivered means another history: its events are new.
            self.last_sequence = point
        if self.last_sequence == self._resumed_at:
            self._stalled_resumes += 1
        else:
            self._stalled_resumes = 0
        self._resumed_at = self.last_sequence
        return self._stalled_resumes

    def _on_connect_error(self, exc: Exception) -> float:
        """Seconds to wait before trying again after a failed connect; raises when it must not.

        A failure before the first open is raised at once (a wrong URL or key
        should not look like a quiet conversation); later ones are retried
        while they look transient.
        """
        error = connect_error(exc)
        if not (self._opened_once and self.reconnect and is_transient(error)):
            self._finished = True
            if error is exc:
                raise error
            raise error from exc
        step = plan_after_close(
            CLOSE_ABNORMAL,
            self._attempt,
            reconnect=True,
            max_attempts=self.max_reconnect_attempts,
        )
        self._log("real-time connect failed: %s -> %s", error, step.action)
        if step.action != "reconnect":
            # Reconnecting gave up (max_reconnect_attempts): the channel is closed for
            # good, as after a close; the last failure is the cause.
            self._finished = True
            raise WebSocketClosedError(
                f"Real-time channel closed: {step.reason}; the last attempt: {error}",
                close_code=self.close_code if self.close_code is not None else CLOSE_ABNORMAL,
                close_reason=self._last_reason,
            ) from error
        self._attempt += 1
        return step.delay

    def _log(self, message: str, *args: Any) -> None:
        if self._log_requests:
            self._logger.info(message, *args)
