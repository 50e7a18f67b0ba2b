"""Everything the sync and async clients share: all of it does no I/O.

Configuration, URL joining, headers, the correlation id, retry decisions,
error mapping, response parsing and request logging live here, so that
``AiriaClient`` and ``AiriaAsyncClient`` differ only in how they send.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import random
import sys
import time
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpx
import pydantic

from ._constants import (
    API_KEY_ENV,
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    IDEMPOTENCY_KEY_HEADER,
    IDEMPOTENT_METHODS,
    IN_PROGRESS_STATUS,
    INITIAL_RETRY_DELAY,
    LOGGER_NAME,
    MAX_RETRY_AFTER,
    MAX_RETRY_DELAY,
    PLACEHOLDER_API_KEY,
    RETRYABLE_STATUS_CODES,
)
from ._exceptions import (
    AiriaAPIError,
    APIConnectionError,
    APIResponseValidationError,
    APITimeoutError,
    make_status_error,
    parse_retry_after,
)
from ._files import ReplayableBody
from ._version import __version__
from .logs import configure_logging, set_correlation_id

USER_AGENT = f"airia-conversations-python/{__version__}"
_REDACTED = "[REDACTED]"
MIN_REDACTED = 8
"""The shortest key or token looked for in error texts to be redacted."""
# Marks a download request: its query string is the credential, kept out of logs.
_SIGNED_URL = "airia_signed_url"
# Holds a streamed body (an upload) that a retry must send again from its start.
_BODY = "airia_replayable_body"


@functools.cache
def _type_adapter(tp: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(tp)


MAX_TIMEOUT = 1_000_000
"""Seconds: the longest `timeout` a client takes (over eleven days)."""


def header_value(name: str, value: str, *, secret: bool = False) -> str:
    """``value``, checked as something the SDK can send in a header: printable ASCII
    and not blank. Raises ValueError (before anything is sent, and never retried):
    a line break would be refused by httpx as a connection error, a letter past ASCII
    would fail to encode. A ``secret`` (a key, a token) is never quoted in the error,
    which ends up in tracebacks and CI logs: the offending character is named, with
    its place, instead (a zero-width or no-break space pasted along with a key)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be non-blank ASCII text")
    if not value.isascii():
        if secret:
            at = next(i for i, c in enumerate(value) if not c.isascii())
            raise ValueError(
                f"{name} must be ASCII text: it holds U+{ord(value[at]):04X} at position {at}"
                " (pasted along with it?)"
            )
        raise ValueError(f"{name} must be non-blank ASCII text, not {value!r}")
    if not value.isprintable():
        raise ValueError(f"{name} must not hold control characters (a line break, a tab)")
    if value != value.strip(" "):
        # httpx refuses such a value (as a connection error, retried in vain), and HTTP
        # would drop the spaces: the server would see another value.
        shown = "" if secret else f", not {value!r}"
        raise ValueError(f"{name} must not begin or end with a space{shown}")
    return value


def resolve_credentials(
    api_key: str | None, bearer_token: str | None
) -> tuple[str | None, str | None]:
    """Return ``(api_key, bearer_token)`` with exactly one set, or raise ValueError.

    The environment is consulted only when neither was given, so an explicit
    bearer token is never silently paired with a key from the environment; or when
    the key given is the documentation's placeholder, `your_api_key`.
    """
    if api_key and bearer_token:
        raise ValueError(
            "Cannot provide both api_key and bearer_token. "
            "Please use only one authentication method."
        )
    if bearer_token:
        return None, header_value("bearer_token", bearer_token.strip(), secret=True)
    env_key = os.environ.get(API_KEY_ENV)
    if api_key and not (api_key.strip() == PLACEHOLDER_API_KEY and env_key):
        return header_value("api_key", api_key.strip(), secret=True), None
    if env_key:
        return header_value(API_KEY_ENV, env_key.strip(), secret=True), None
    raise ValueError(
        f"Authentication required. Provide either api_key (or set {API_KEY_ENV} "
        "environment variable) or bearer_token."
    )


def resolve_base_url(base_url: str | None) -> str:
    """Argument, then ``AIRIA_BASE_URL``, then the default; always with a trailing slash.

    The trailing slash matters: ``urljoin`` would otherwise drop the last
    path segment of a base URL such as ``https://host/airia``.

    Raises ValueError for a URL without ``http://`` or ``https://`` and a host:
    ``localhost:8000`` reads as scheme ``localhost``, and every request would
    then fail (after its retries) naming a URL with no host in it.
    """
    url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    source = "base_url" if base_url else BASE_URL_ENV
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a port that is not a number in 0-65535 raises here)
    except ValueError as exc:  # a bracketed host that is no IPv6 address, a bad port
        raise ValueError(f"{source} {url!r} is not a usable base URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{source} {url!r} is not a usable base URL: it needs http:// or https:// "
            "and a host (e.g. http://localhost:8000/)"
        )
    return url if url.endswith("/") else url + "/"


def path_segment(value: str) -> str:
    """Quote a value for use as one URL path segment (``/``, ``?``, ``#``, ``..`` included)."""
    quoted = quote(str(value), safe="")
    # Dot segments would be resolved away by urljoin and change the target.
    if quoted in (".", ".."):
        quoted = quoted.replace(".", "%2E")
    return quoted


# Module-level so tests can replace it with a clock that their recorded sleeps move on.
_monotonic = time.monotonic


@dataclasses.dataclass
class Retries:
    """Where one call's retries stand: how many of ``max_retries`` were spent, and since
    when (``_monotonic``) the server has said the first request with the call's key is
    still running (None: it has not)."""

    spent: int = 0
    running_since: float | None = None


def _still_running(response: httpx.Response) -> bool:
    """The server's answer while the first request with this key runs: 409 with Retry-After."""
    return response.status_code == IN_PROGRESS_STATUS and "retry-after" in response.headers


def _logging_configured(logger: logging.Logger) -> bool:
    """Whether `logger`'s records reach a handler (its own or an ancestor's)."""
    current: logging.Logger | None = logger
    while current is not None:
        if current.handlers:
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


class BaseClient:
    """Configuration and the no-I/O half of every request.

    Exported as ``airia.client.base_client.AiriaBaseClient``, so its parameters are
    the official base client's, in its order, each optional; ``max_retries``, which
    the official one lacks, is keyword-only. The clients pass ``base_url=None``:
    then ``AIRIA_BASE_URL``, then the default.
    """

    _http: Any

    def __init__(
        self,
        base_url: str | None = DEFAULT_BASE_URL,
        api_key: str | None = None,
        bearer_token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        log_requests: bool = False,
        custom_logger: logging.Logger | None = None,
        *,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        self.api_key, self.bearer_token = resolve_credentials(api_key, bearer_token)
        self.base_url = resolve_base_url(base_url)
        # Checked here, as the base URL is: past this, 0 read as a connection error,
        # a negative timeout failed inside httpx at the first call, and a negative
        # max_retries was taken as 0.
        # (Infinity and the like failed deep in the sync transport: "timestamp out of
        # range", or a false timeout at once.)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 < timeout <= MAX_TIMEOUT
        ):
            raise ValueError(
                f"timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT:,}, "
                f"not {timeout!r}"
            )
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be a whole number from 0, not {max_retries!r}")
        self.timeout = timeout
        self.max_retries = max_retries
        self.log_requests = log_requests
        self.logger = custom_logger or logging.getLogger(LOGGER_NAME)
        if log_requests and custom_logger is None and not _logging_configured(self.logger):
            # Asked for request logs where nothing would show them: as the official
            # package does, they go to stderr (`configure_logging()`). Logging an
            # application has set up is left as it is.
            # Colours only on a terminal: these lines were not asked for by name, and
            # escape codes would litter a log file or a pipe.
            configure_logging(use_colors=sys.stderr.isatty())

    def __repr__(self) -> str:
        auth = "api_key" if self.api_key else "bearer_token"
        return f"{type(self).__name__}(base_url={self.base_url!r}, auth={auth})"

    # -- building requests ---------------------------------------------------

    def _url(self, path: str) -> str:
        return urljoin(self.base_url, path)

    def _headers(self, correlation_id: str) -> dict[str, str]:
        headers = {
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            "X-Correlation-ID": correlation_id,
        }
        if self.api_key:
            headers["X-API-KEY"] = self.api_key
        else:
            headers["Authorization"] = f"Bearer {self.bearer_token}"
        return headers

    def _build_request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: Any = None,
        headers: dict[str, str] | None = None,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> httpx.Request:
        """``content`` is a body already encoded (bytes or a stream of bytes), sent as is.

        With ``idempotency_key`` the request carries ``Idempotency-Key`` and may be
        retried even though it is a POST; every retry sends the same key.
        """
        # As the official package does: the request's id becomes the context's, for
        # log lines written while it runs and `airia.get_correlation_id()` after.
        if correlation_id:
            header_value("correlation_id", correlation_id)
        correlation_id = set_correlation_id(correlation_id or None)
        all_headers = {**self._headers(correlation_id), **(headers or {})}
        if idempotency_key is not None:
            all_headers[IDEMPOTENCY_KEY_HEADER] = header_value("idempotency_key", idempotency_key)
        return self._http.build_request(
            method,
            self._url(path),
            params=params,
            json=json,
            content=content,
            headers=all_headers,
            timeout=httpx.Timeout(self.timeout),
            extensions={_BODY: content} if isinstance(content, ReplayableBody) else None,
        )

    @staticmethod
    def _next_attempt(request: httpx.Request) -> httpx.Request:
        """The request to send for a retry: itself, or a copy that streams the body anew.

        httpx cannot iterate a streamed body twice (and some transports keep the
        bytes of the first attempt), so an upload gets a fresh request with the
        same headers (correlation id, idempotency key) around the rewound body.
        """
        body = request.extensions.get(_BODY)
        if body is None:
            return request
        return httpx.Request(
            request.method,
            request.url,
            headers=request.headers,
            content=body,
            extensions=request.extensions,
        )

    def _same_origin(self, url: str) -> bool:
        target, base = httpx.URL(url), httpx.URL(self.base_url)
        return (target.scheme, target.host, target.port) == (base.scheme, base.host, base.port)

    def _build_download_request(self, url: str, correlation_id: str | None) -> httpx.Request:
        """GET of a signed URL: credentials only go along to the API's own origin.

        The signature in the URL is the authorization, so the key is not needed;
        not sending it to another host (a CDN, object storage) keeps it from leaking.
        A relative URL is resolved against the base URL.
        """
        if correlation_id:
            header_value("correlation_id", correlation_id)
        correlation_id = set_correlation_id(correlation_id or None)
        absolute = self._url(url)
        if self._same_origin(absolute):
            headers = self._headers(correlation_id)
        else:
            headers = {"User-Agent": USER_AGENT, "X-Correlation-ID": correlation_id}
        headers["Accept"] = "*/*"
        return self._http.build_request(
            "GET",
            absolute,
            headers=headers,
            timeout=httpx.Timeout(self.timeout),
            extensions={_SIGNED_URL: True},
        )

    def _display_url(self, request: httpx.Request) -> str:
        """The URL for logs and error messages: no secrets, no signature of a signed URL."""
        if request.extensions.get(_SIGNED_URL) and request.url.query:
            return str(request.url.copy_with(query=None)) + "?[REDACTED]"
        return self._redact(str(request.url))

    # -- retries ---------------------------------------------------------------

    def _retry_delay(
        self, request: httpx.Request, retries: Retries, response: httpx.Response | None
    ) -> float | None:
        """Seconds to wait before retrying, or None when the request must not be retried;
        ``retries`` is the call's, and is updated for the retry.

        ``response`` is None for a transport error. A POST is retried only when
        it carries an ``Idempotency-Key`` (the server then answers a repeat with
        the first response). A keyed request is also retried on a 409 with
        ``Retry-After``: the first request with that key is still running (slower
        than this client's timeout, say), and giving up would leave its write to land
        after the caller was told it failed. That is waited out without spending
        ``max_retries``, for up to ``timeout`` seconds since the first such answer. A
        streamed body is retried only if it can be sent again from its start.
        """
        has_key = IDEMPOTENCY_KEY_HEADER in request.headers
        if self.max_retries <= 0 or (request.method not in IDEMPOTENT_METHODS and not has_key):
            return None
        body = request.extensions.get(_BODY)
        if body is not None and not body.replayable:
            return None
        if response is not None and has_key and _still_running(response):
            now = _monotonic()
            if retries.running_since is None:
                retries.running_since = now
            left = self.timeout - (now - retries.running_since)
            delay = self._wait(response, retries.spent)
            return None if delay is None or left <= 0 else min(delay, left)
        if retries.spent >= self.max_retries:
            return None
        if response is not None and response.status_code not in RETRYABLE_STATUS_CODES:
            return None
        delay = self._wait(response, retries.spent)
        if delay is not None:
            retries.spent += 1
        return delay

    @staticmethod
    def _wait(response: httpx.Response | None, spent: int) -> float | None:
        """The response's ``Retry-After`` (None if it asks for more than
        ``MAX_RETRY_AFTER``), else a backoff that doubles with the retries spent."""
        retry_after = parse_retry_after(response.headers) if response is not None else None
        if retry_after is not None:
            return retry_after if retry_after <= MAX_RETRY_AFTER else None
        backoff = min(MAX_RETRY_DELAY, INITIAL_RETRY_DELAY * 2**spent)
        # Jitter down by up to a quarter so clients that failed together spread out.
        return backoff * (1 - 0.25 * random.random())

    # -- responses and errors --------------------------------------------------

    def _redact(self, text: str) -> str:
        """`text` without the key or token in it. One shorter than `MIN_REDACTED` is
        no credential this server issues, and could be any word's letters: replacing
        it would garble the text (``Invalid API [REDACTED]ey``) and hide nothing."""
        for secret in (self.api_key, self.bearer_token):
            if secret and len(secret) >= MIN_REDACTED:
                text = text.replace(secret, _REDACTED)
        return text

    def _status_error(self, request: httpx.Request, response: httpx.Response) -> AiriaAPIError:
        return make_status_error(
            response,
            correlation_id=request.headers.get("x-correlation-id"),
            redact=self._redact,
            idempotency_key=request.headers.get(IDEMPOTENCY_KEY_HEADER),
        )

    def _transport_error(self, request: httpx.Request, exc: httpx.TransportError) -> AiriaAPIError:
        """The error for a request that got no answer. It names the request's key, if it
        had one: the write may have been done, and is done once if called again so."""
        correlation_id = request.headers.get("x-correlation-id")
        key = request.headers.get(IDEMPOTENCY_KEY_HEADER)
        detail = self._redact(str(exc)) or type(exc).__name__
        if isinstance(exc, httpx.TimeoutException):
            # The same words from both clients: the sync transport's timeouts say "timed
            # out", the async one's say nothing (`str()` is empty).
            return APITimeoutError(
                f"Request to {self._display_url(request)} timed out ({type(exc).__name__})",
                correlation_id=correlation_id,
                idempotency_key=key,
            )
        if isinstance(exc, httpx.ConnectError):
            what = f"Could not connect to {self._display_url(request)}"
        else:  # connected, then lost: mid-request or mid-response
            what = f"The connection to {self._display_url(request)} failed"
        return APIConnectionError(
            f"{what}: {detail}", correlation_id=correlation_id, idempotency_key=key
        )

    def _parse(self, request: httpx.Request, response: httpx.Response, cast_to: Any):
        """``cast_to`` is a model class, or any type pydantic can validate (``list[Model]``)."""
        if cast_to is None:
            return None
        try:
            if isinstance(cast_to, type) and issubclass(cast_to, pydantic.BaseModel):
                return cast_to.model_validate(response.json())
            return _type_adapter(cast_to).validate_python(response.json())
        except (ValueError, pydantic.ValidationError) as exc:
            # `list[Participant]` is a type to `isinstance` before Python 3.11: say it whole.
            plain = isinstance(cast_to, type) and not hasattr(cast_to, "__origin__")
            name = cast_to.__name__ if plain else str(cast_to)
            raise APIResponseValidationError(
                response.status_code,
                f"Unexpected response body for {name}",
                self._redact(response.text),
                correlation_id=request.headers.get("x-correlation-id"),
                response=response,
                idempotency_key=request.headers.get(IDEMPOTENCY_KEY_HEADER),
            ) from exc

    # -- logging ---------------------------------------------------------------

    def _log_response(
        self, request: httpx.Request, response: httpx.Response, elapsed: float
    ) -> None:
        if self.log_requests:
            self.logger.info(
                "%s %s -> %s (%.1f ms) correlation_id=%s",
                request.method,
                self._display_url(request),
                response.status_code,
                elapsed * 1000,
                request.headers.get("x-correlation-id"),
            )

    def _log_retry(
        self, request: httpx.Request, retries: Retries, delay: float, reason: str
    ) -> None:
        if not self.log_requests:
            return
        if reason == str(IN_PROGRESS_STATUS):  # the one 409 retried: a keyed request running
            self.logger.warning(
                "%s %s: the first request with its Idempotency-Key is still running; "
                "asking again in %.2f s correlation_id=%s",
                request.method,
                self._display_url(request),
                delay,
                request.headers.get("x-correlation-id"),
            )
            return
        self.logger.warning(
            "%s %s failed (%s); retry %d of %d in %.2f s correlation_id=%s",
            request.method,
            self._display_url(request),
            self._redact(reason),
            retries.spent,
            self.max_retries,
            delay,
            request.headers.get("x-correlation-id"),
        )
