"""One in-memory fake of the Conversations API, served to both clients.

``FakeServer`` routes like the real server for the happy paths; a test that
needs a particular answer queues it with ``server.script(...)``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import airia._client
from airia import AiriaAsyncClient, AiriaClient

BASE_URL = "http://testserver/"
API_KEY = "sk-test-123"
NOW = "2026-11-26T06:01:34.123456Z"


def problem(status: int, message: str, **extra: Any) -> httpx.Response:
    body = {
        "type": "about:blank",
        "title": httpx.codes.get_reason_phrase(status),
        "status": status,
        "detail": extra.pop("detail", message),
        "message": message,
        "correlationId": "server-cid",
        **extra,
    }
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


class FakeServer:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.conversations: dict[str, dict[str, Any]] = {}
        self._scripted: list[httpx.Response | Exception] = []

    def script(self, *answers: httpx.Response | Exception) -> None:
        """Answer the next requests with these, in order, before routing resumes."""
        self._scripted.extend(answers)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self._scripted:
            answer = self._scripted.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        return self._route(request)

    def _route(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.strip("/").split("/")
        if parts[:2] != ["v1", "Conversations"]:
            return problem(404, "Not found")
        if len(parts) == 2 and request.method == "POST":
            return self._create(json.loads(request.content))
        if parts[2:] == ["feed"] and request.method == "GET":
            items = [self._feed_item(c) for c in self.conversations.values()]
            return httpx.Response(200, json={"items": items, "totalCount": len(items)})
        conversation = self.conversations.get(parts[2]) if len(parts) == 3 else None
        if conversation is None:
            return problem(404, "Conversation not found")
        if request.method == "GET":
            return httpx.Response(200, json=conversation)
        if request.method == "DELETE":
            del self.conversations[parts[2]]
            return httpx.Response(204)
        if request.method == "PUT":
            conversation.update(json.loads(request.content))
            return httpx.Response(200, json=conversation)
        return problem(405, "Method not allowed")

    def _create(self, body: dict[str, Any]) -> httpx.Response:
        cid = str(uuid.uuid4())
        conversation = {
            "conversationId": cid,
            "userId": body["userId"],
            "title": body.get("title"),
            "deploymentId": body.get("deploymentId") or "default-deployment",
            "dataSourceFiles": body.get("dataSourceFiles") or {},
            "isBookmarked": body.get("isBookmarked", False),
            "websocketUrl": f"ws://testserver/v1/Conversations/{cid}/ws?ticket=t",
            "createdAt": NOW,
            "updatedAt": NOW,
            "messages": [],
            "policyRedactions": None,
            "lastExecutionStatus": None,
            "lastExecutionId": None,
        }
        self.conversations[cid] = conversation
        created = {k: v for k, v in conversation.items() if k != "messages"}
        created.update(iconId=None, iconUrl=None, description=None, spaceName=None)
        return httpx.Response(201, json=created)

    @staticmethod
    def _feed_item(c: dict[str, Any]) -> dict[str, Any]:
        keys = ("conversationId", "userId", "title", "createdAt", "updatedAt")
        return {
            **{k: c[k] for k in keys},
            "messageCount": len(c["messages"]),
            "isBookmarked": c["isBookmarked"],
            "deploymentId": c["deploymentId"],
        }


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record retry delays instead of waiting them out."""
    delays: list[float] = []

    async def fake_async_sleep(delay: float) -> None:
        delays.append(delay)

    monkeypatch.setattr(airia._client, "_sleep", delays.append)
    monkeypatch.setattr(airia._client, "_async_sleep", fake_async_sleep)
    return delays


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRIA_API_KEY", raising=False)
    monkeypatch.delenv("AIRIA_BASE_URL", raising=False)


@pytest.fixture
def client(server: FakeServer, sleeps: list[float]):
    http = httpx.Client(transport=httpx.MockTransport(server))
    with AiriaClient(base_url=BASE_URL, api_key=API_KEY, http_client=http) as c:
        yield c
    http.close()


@pytest.fixture
async def async_client(server: FakeServer, sleeps: list[float]):
    http = httpx.AsyncClient(transport=httpx.MockTransport(server))
    async with AiriaAsyncClient(base_url=BASE_URL, api_key=API_KEY, http_client=http) as c:
        yield c
    await http.aclose()


class SyncOrAsync:
    """Call a client method the same way whichever client is under test."""

    def __init__(self, server: FakeServer, kind: str, **client_kwargs: Any) -> None:
        self.kind = kind
        transport = httpx.MockTransport(server)
        kwargs = {"base_url": BASE_URL, "api_key": API_KEY, **client_kwargs}
        if kind == "sync":
            self.client: Any = AiriaClient(http_client=httpx.Client(transport=transport), **kwargs)
        else:
            self.client = AiriaAsyncClient(
                http_client=httpx.AsyncClient(transport=transport), **kwargs
            )

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        bound = getattr(self.client.conversations, method)
        if self.kind == "sync":
            return bound(*args, **kwargs)
        return asyncio.run(bound(*args, **kwargs))


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest, server: FakeServer, sleeps: list[float]):
    """Both clients, one at a time, behind the same call syntax."""
    return lambda **kwargs: SyncOrAsync(server, request.param, **kwargs)


MakeApi = Callable[..., SyncOrAsync]
