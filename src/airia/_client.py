"""``AiriaClient`` and ``AiriaAsyncClient``: the only code that does network I/O."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from ._base_client import BaseClient, Retries
from ._constants import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT
from .resources.conversations import AsyncConversations, Conversations

# Module-level so tests can replace them and never wait on the real clock.
_sleep = time.sleep
_async_sleep = asyncio.sleep


def _alias(name: str) -> property:
    """Expose ``client.<name>`` as ``client.conversations.<name>`` (the seed uses both)."""

    def get(self: Any) -> Any:
        return getattr(self.conversations, name)

    return property(get, doc=f"Alias of ``conversations.{name}``.")


class _ConversationAliases:
    create_conversation = _alias("create_conversation")
    get_conversation = _alias("get_conversation")
    delete_conversation = _alias("delete_conversation")
    update_conversation = _alias("update_conversation")
    get_conversations_feed = _alias("get_conversations_feed")


class AiriaClient(_ConversationAliases, BaseClient):
    """Synchronous client for the Airia Conversations API.

    Example:
        ```python
        from airia import AiriaClient

        with AiriaClient(api_key="your_api_key") as client:
            conversation = client.conversations.create_conversation(user_id="user_123")
        ```
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        bearer_token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        log_requests: bool = False,
        custom_logger: logging.Logger | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.Client | None = None,
    ) -> None:
        """Create a client.

        Args:
            base_url: Server URL; else ``AIRIA_BASE_URL``; else ``http://localhost:8000/``.
            api_key: API key; else ``AIRIA_API_KEY`` when no bearer token is given either.
            bearer_token: Bearer token (JWT), instead of an API key.
            timeout: Timeout in seconds for each attempt; also the longest wait, in all,
                for the first attempt of a keyed request that the server says is
                still running (409 with Retry-After).
            log_requests: Log each request (method, URL, status, time, correlation id).
            custom_logger: Logger to use instead of ``logging.getLogger("airia")``.
            max_retries: Retries of idempotent requests (and of POSTs with an
                ``Idempotency-Key``) on transient failures. Waiting for a keyed
                request's first attempt still running spends none of them.
            http_client: An ``httpx.Client`` to send through; the caller keeps ownership.
        """
        super().__init__(
            base_url=base_url,
            api_key=api_key,
            bearer_token=bearer_token,
            timeout=timeout,
            log_requests=log_requests,
            custom_logger=custom_logger,
            max_retries=max_retries,
        )
        if http_client is not None and not isinstance(http_client, httpx.Client):
            # An AsyncClient here failed only at the first call, deep inside httpx.
            raise TypeError(
                f"http_client must be an httpx.Client, not {type(http_client).__name__}"
                " (an httpx.AsyncClient goes with AiriaAsyncClient)"
            )
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client()
        self.conversations = Conversations(self)

    @classmethod
    def with_bearer_token(
        cls,
        bearer_token: str,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        log_requests: bool = False,
        custom_logger: logging.Logger | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.Client | None = None,
    ) -> AiriaClient:
        """Create a client that authenticates with ``Authorization: Bearer <token>``."""
        return cls(
            base_url=base_url,
            bearer_token=bearer_token,
            timeout=timeout,
            log_requests=log_requests,
            custom_logger=custom_logger,
            max_retries=max_retries,
            http_client=http_client,
        )

    def _request(
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
        cast_to: Any = None,
    ) -> Any:
        request = self._build_request(
            method,
            path,
            params=params,
            json=json,
            content=content,
            headers=headers,
            correlation_id=correlation_id,
            idempotency_key=idempotency_key,
        )
        return self._parse(request, self._send(request), cast_to)

    @contextlib.contextmanager
    def _stream(self, request: httpx.Request) -> Iterator[httpx.Response]:
        """A successful response whose body is read by the caller, then closed."""
        response = self._send(request, stream=True)
        try:
            yield response
        except httpx.TransportError as exc:  # the connection broke mid-body
            raise self._transport_error(request, exc) from exc
        finally:
            response.close()

    def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        """Send with retries; return a 2xx response or raise the mapped error."""
        retries = Retries()
        while True:
            started = time.perf_counter()
            try:
                response = self._pool().send(request, stream=stream)
            except httpx.TransportError as exc:
                error = self._transport_error(request, exc)
                delay = self._retry_delay(request, retries, None)
                if delay is None:
                    raise error from exc
                self._log_retry(request, retries, delay, type(exc).__name__)
            else:
                self._log_response(request, response, time.perf_counter() - started)
                if response.is_success:
                    return response
                if stream:  # error bodies are small; read them for the exception
                    response.read()
                    response.close()
                delay = self._retry_delay(request, retries, response)
                if delay is None:
                    raise self._status_error(request, response)
                self._log_retry(request, retries, delay, str(response.status_code))
            _sleep(delay)
            request = self._next_attempt(request)

    def _pool(self) -> httpx.Client:
        """The client to send through. One this client made and `close()` closed is
        made anew: a closed client still works, with a fresh pool (as the official
        package's does), where it raised httpx's RuntimeError."""
        if self._owns_http and self._http.is_closed:
            self._http = httpx.Client()
        return self._http

    def close(self) -> None:
        """Release the connection pool (not an ``http_client`` you passed in)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> AiriaClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AiriaAsyncClient(_ConversationAliases, BaseClient):
    """Asynchronous client for the Airia Conversations API.

    Example:
        ```python
        from airia import AiriaAsyncClient

        async with AiriaAsyncClient(api_key="your_api_key") as client:
            conversation = await client.conversations.create_conversation(user_id="user_123")
        ```
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        bearer_token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        log_requests: bool = False,
        custom_logger: logging.Logger | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        """Create a client; the arguments are those of ``AiriaClient``."""
        super().__init__(
            base_url=base_url,
            api_key=api_key,
            bearer_token=bearer_token,
            timeout=timeout,
            log_requests=log_requests,
            custom_logger=custom_logger,
            max_retries=max_retries,
        )
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise TypeError(
                f"http_client must be an httpx.AsyncClient, not {type(http_client).__name__}"
                " (an httpx.Client goes with AiriaClient)"
            )
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop `_http` was used in
        self.conversations = AsyncConversations(self)

    @classmethod
    def with_bearer_token(
        cls,
        bearer_token: str,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        log_requests: bool = False,
        custom_logger: logging.Logger | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.AsyncClient | None = None,
    ) -> AiriaAsyncClient:
        """Create a client that authenticates with ``Authorization: Bearer <token>``."""
        return cls(
            base_url=base_url,
            bearer_token=bearer_token,
            timeout=timeout,
            log_requests=log_requests,
            custom_logger=custom_logger,
            max_retries=max_retries,
            http_client=http_client,
        )

    async def _request(
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
        cast_to: Any = None,
    ) -> Any:
        request = self._build_request(
            method,
            path,
            params=params,
            json=json,
            content=content,
            headers=headers,
            correlation_id=correlation_id,
            idempotency_key=idempotency_key,
        )
        return self._parse(request, await self._send(request), cast_to)

    @contextlib.asynccontextmanager
    async def _stream(self, request: httpx.Request) -> AsyncIterator[httpx.Response]:
        """A successful response whose body is read by the caller, then closed."""
        response = await self._send(request, stream=True)
        try:
            yield response
        except httpx.TransportError as exc:  # the connection broke mid-body
            raise self._transport_error(request, exc) from exc
        finally:
            await response.aclose()

    async def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        """Send with retries; return a 2xx response or raise the mapped error."""
        retries = Retries()
        while True:
            started = time.perf_counter()
            try:
                response = await self._pool().send(request, stream=stream)
            except httpx.TransportError as exc:
                error = self._transport_error(request, exc)
                delay = self._retry_delay(request, retries, None)
                if delay is None:
                    raise error from exc
                self._log_retry(request, retries, delay, type(exc).__name__)
            else:
                self._log_response(request, response, time.perf_counter() - started)
                if response.is_success:
                    return response
                if stream:  # error bodies are small; read them for the exception
                    await response.aread()
                    await response.aclose()
                delay = self._retry_delay(request, retries, response)
                if delay is None:
                    raise self._status_error(request, response)
                self._log_retry(request, retries, delay, str(response.status_code))
            await _async_sleep(delay)
            request = self._next_attempt(request)

    def _pool(self) -> httpx.AsyncClient:
        """The client to send through. One this client made and `close()` closed is
        made anew: a closed client still works, with a fresh pool. So is one whose
        event loop has ended: a script that calls `asyncio.run` once per operation
        (or a test suite with a loop per test) otherwise met its connections, bound
        to the first loop, as `RuntimeError: Event loop is closed`."""
        loop = asyncio.get_running_loop()
        if self._owns_http and (
            self._http.is_closed or (self._loop is not loop and self._loop_ended())
        ):
            self._http = httpx.AsyncClient()
        self._loop = loop
        return self._http

    def _loop_ended(self) -> bool:
        return self._loop is not None and self._loop.is_closed()

    async def close(self) -> None:
        """Release the connection pool (not an ``http_client`` you passed in)."""
        if self._owns_http:
            if self._loop_ended():  # its connections went with their loop
                self._http = httpx.AsyncClient()
            await self._http.aclose()

    async def __aenter__(self) -> AiriaAsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
