"""One in-memory fake of the Conversations API, served to both clients.

``FakeServer`` routes like the real server for the happy paths; a test that
needs a particular answer queues it with ``server.script(...)``.
"""

from __future__ import annotations

import asyncio
import base64
import email.parser
import email.policy
import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest

import airia._base_client
import airia._client
import airia.cli
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


_LITERALS = {"messages", "truncate", "mark-as-read", "share", "participants", "role"}
_LITERALS |= {"typing", "presence", "websocket-url"}
_LITERALS |= {"external-identities", "agent-attachments", "base64", "attachments"}
BLOB_PATH = "/blobs/"


def parse_multipart(request: httpx.Request) -> dict[str, Any]:
    """Form fields of a multipart body, read by the standard library, not by our encoder.

    Text fields map to their value; file fields to ``(filename, content type, bytes)``.
    """
    head = b"Content-Type: " + request.headers["content-type"].encode() + b"\r\n\r\n"
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.content)
    assert message.is_multipart() and not message.defects, message.defects
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True)
        filename = part.get_filename()
        if filename is None:
            fields[name] = data.decode()
        else:
            fields[name] = (filename, part.get_content_type(), data)
    return fields


class AnswerLost(Exception):
    """Scripted: the server does the request, then the connection drops before its answer."""


class FakeServer:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.conversations: dict[str, dict[str, Any]] = {}
        self.participants: dict[str, dict[str, dict[str, Any]]] = {}
        self.ws_base = "ws://testserver"
        """Where ``websocket-url`` points; a test with a real socket server sets it."""
        self.tickets_issued = 0
        self.last_sequence: int | None = None
        """``lastSequence`` of ``websocket-url``'s answer; None leaves it out (an older server)."""
        self.identities: dict[str, dict[str, Any]] = {}
        self.blobs: dict[str, dict[str, Any]] = {}
        """Attachments by blob id, with their ``content``."""
        self._scripted: list[httpx.Response | Exception] = []
        self.answered: dict[str, httpx.Response] = {}
        """Successful answers by Idempotency-Key, replayed to a repeat as the server does."""

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
            if isinstance(answer, AnswerLost):
                self._answer(request)
                raise httpx.ReadError("Connection reset by peer", request=request)
            if isinstance(answer, Exception):
                raise answer
            return answer
        return self._answer(request)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        key = request.headers.get("Idempotency-Key")
        kept = self.answered.get(key) if key else None
        if kept is not None:
            headers = {**kept.headers, "Idempotent-Replayed": "true"}
            return httpx.Response(kept.status_code, content=kept.content, headers=headers)
        response = self._route(request)
        if key and response.is_success:
            self.answered[key] = response
        return response

    def _route(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith(BLOB_PATH):
            return self._blob(request)
        parts = request.url.path.strip("/").split("/")
        if parts[:2] != ["v1", "Conversations"]:
            return problem(404, "Not found")
        if parts[2:] == ["external-identities", "lookup"] and request.method == "GET":
            return self._lookup(request)
        if len(parts) == 2 and request.method == "POST":
            return self._create(json.loads(request.content))
        if parts[2:] == ["feed"] and request.method == "GET":
            items = [self._feed_item(c) for c in self.conversations.values()]
            return httpx.Response(200, json={"items": items, "totalCount": len(items)})
        conversation = self.conversations.get(parts[2]) if len(parts) >= 3 else None
        if conversation is None:
            return problem(404, "Conversation not found")
        if len(parts) > 3:
            return self._sub_route(request, conversation, parts[3:])
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

    def _sub_route(
        self, request: httpx.Request, conversation: dict[str, Any], parts: list[str]
    ) -> httpx.Response:
        cid = conversation["conversationId"]
        is_json = request.headers.get("content-type", "").startswith("application/json")
        body = json.loads(request.content) if request.content and is_json else {}
        route = (request.method, *(p if p in _LITERALS else "*" for p in parts))
        messages: list[dict[str, Any]] = conversation["messages"]
        participants = self.participants.setdefault(cid, {})
        if route == ("POST", "messages"):
            message = {
                "id": f"m{len(messages) + 1}",
                "conversationId": cid,
                "createdAt": NOW,
                "updatedAt": NOW,
                **{k: body.get(k) for k in ("message", "role", "images", "imageAttachmentIds")},
                "userId": body.get("userId") or conversation["userId"],
            }
            messages.append(message)
            return httpx.Response(
                201, json={"messageId": message["id"], "conversationId": cid, "createdAt": NOW}
            )
        if route == ("GET", "messages"):
            params = request.url.params
            ordered = messages if params.get("order", "asc") == "asc" else messages[::-1]
            start, limit = int(params.get("cursor", 0)), int(params.get("limit", 50))
            end = start + limit
            return httpx.Response(
                200,
                json={
                    "items": ordered[start:end],
                    "nextCursor": str(end) if end < len(ordered) else None,
                },
            )
        if route == ("DELETE", "messages", "*", "truncate"):
            index = next((i for i, m in enumerate(messages) if m["id"] == parts[1]), None)
            if index is None:
                return problem(404, "Message not found")
            deleted = len(messages) - index
            del messages[index:]
            result = {"conversationId": cid, "fromMessageId": parts[1]}
            return httpx.Response(
                200, json={**result, "deletedCount": deleted, "remainingCount": len(messages)}
            )
        if route == ("PATCH", "mark-as-read"):
            user = request.url.params.get("userId", conversation["userId"])
            last = messages[-1]["id"] if messages else None
            result = {"conversationId": cid, "userId": user, "lastReadMessageId": last}
            return httpx.Response(200, json={**result, "readAt": NOW})
        if route == ("POST", "share"):
            participant = self._participant(cid, body["userId"], body["role"])
            participants[body["userId"]] = participant
            return httpx.Response(200, json=participant)
        if route == ("GET", "participants"):
            return httpx.Response(200, json=list(participants.values()))
        if route[:3] == (request.method, "participants", "*") and parts[1] in participants:
            if route == ("PUT", "participants", "*", "role"):
                participants[parts[1]]["role"] = body["role"]
                return httpx.Response(200, json=participants[parts[1]])
            if route == ("DELETE", "participants", "*"):
                return httpx.Response(200, json=participants.pop(parts[1]))
        if route == ("POST", "typing"):
            result = {"conversationId": cid, "userId": body.get("userId")}
            return httpx.Response(200, json={**result, "isTyping": body["isTyping"]})
        if route == ("POST", "presence"):
            result = {"conversationId": cid, "userId": body.get("userId")}
            return httpx.Response(200, json={**result, "action": body["action"]})
        if route == ("GET", "websocket-url"):
            self.tickets_issued += 1
            url = f"{self.ws_base}/v1/Conversations/{cid}/ws?ticket=t{self.tickets_issued}"
            minted = {"websocketUrl": url, "expiresAt": NOW}
            if self.last_sequence is not None:
                minted["lastSequence"] = self.last_sequence
            return httpx.Response(200, json=minted)
        if parts[0] in ("external-identities", "agent-attachments", "attachments"):
            return self._attachment_route(request, cid, route, parts)
        return problem(404, "Not found")

    # -- external identities and attachments ----------------------------------

    @staticmethod
    def _triple(values: Any) -> tuple[str, str, str]:
        return tuple(values[k] for k in ("externalSystem", "externalChannelId", "externalThreadId"))

    def _lookup(self, request: httpx.Request) -> httpx.Response:
        triple = self._triple(request.url.params)
        for identity in self.identities.values():
            if self._triple(identity) == triple:
                return httpx.Response(200, json=self.conversations[identity["conversationId"]])
        return problem(404, "External identity not found")

    def _attachment_route(
        self, request: httpx.Request, cid: str, route: tuple[str, ...], parts: list[str]
    ) -> httpx.Response:
        if route == ("GET", "external-identities"):
            mine = [i for i in self.identities.values() if i["conversationId"] == cid]
            return httpx.Response(200, json=mine)
        if route == ("POST", "external-identities"):
            body = json.loads(request.content)
            for identity in self.identities.values():
                if self._triple(identity) == self._triple(body):
                    return problem(
                        409,
                        "External identity already mapped",
                        conversationId=identity["conversationId"],
                    )
            identity = {"id": f"xi{len(self.identities) + 1}", "conversationId": cid, **body}
            identity["createdAt"] = NOW
            self.identities[identity["id"]] = identity
            return httpx.Response(201, json=identity)
        if route == ("DELETE", "external-identities", "*"):
            identity = self.identities.get(parts[1])
            if identity is None or identity["conversationId"] != cid:
                return problem(404, "External identity not found")
            del self.identities[parts[1]]
            return httpx.Response(204)
        if route == ("POST", "agent-attachments"):
            form = parse_multipart(request)
            file_name, content_type, content = form["file"]
            return self._store(cid, file_name, content_type, content, form.get("source", "agent"))
        if route == ("POST", "agent-attachments", "base64"):
            body = json.loads(request.content)
            content = base64.b64decode(body["base64Content"])
            source = body.get("source") or "agent"
            return self._store(cid, body["fileName"], body["contentType"], content, source)
        if route == ("GET", "attachments"):
            mine = [
                {k: v for k, v in b.items() if k != "content"}
                for b in self.blobs.values()
                if b["conversationId"] == cid
            ]
            return httpx.Response(200, json=mine)
        return problem(404, "Not found")

    def _store(
        self, cid: str, file_name: str, content_type: str, content: bytes, source: str
    ) -> httpx.Response:
        blob_id = f"b{len(self.blobs) + 1}"
        blob = {
            "blobId": blob_id,
            "conversationId": cid,
            "fileName": file_name,
            "contentType": content_type,
            "size": len(content),
            "source": source,
            "createdAt": NOW,
            "sha256": hashlib.sha256(content).hexdigest(),
            "url": f"http://testserver{BLOB_PATH}{blob_id}?exp=1&sig=good",
            "content": content,
        }
        self.blobs[blob_id] = blob
        return httpx.Response(200, json={k: v for k, v in blob.items() if k != "content"})

    def _blob(self, request: httpx.Request) -> httpx.Response:
        blob = self.blobs.get(request.url.path.removeprefix(BLOB_PATH))
        if blob is None or request.url.params.get("sig") != "good":
            return problem(403, "Invalid or expired signature")
        # As the server names a download: an ASCII name, and the real one (RFC 6266).
        ascii_name = "".join(c if c.isascii() and c not in '"\\' else "_" for c in blob["fileName"])
        headers = {
            "content-type": blob["contentType"],
            "content-disposition": f'attachment; filename="{ascii_name}"; '
            f"filename*=UTF-8''{quote(blob['fileName'], safe='')}",
        }
        return httpx.Response(200, content=blob["content"], headers=headers)

    @staticmethod
    def _participant(cid: str, user_id: str, role: str) -> dict[str, Any]:
        return {
            "id": f"p-{user_id}",
            "conversationId": cid,
            "userId": user_id,
            "username": user_id.title(),
            "role": role,
            "sharedAt": NOW,
            "sharedByUserId": "owner",
            "sharedByUsername": "Owner",
        }

    @staticmethod
    def _feed_item(c: dict[str, Any]) -> dict[str, Any]:
        keys = ("conversationId", "userId", "title", "createdAt", "updatedAt")
        return {
            **{k: c[k] for k in keys},
            "messageCount": len(c["messages"]),
            "isBookmarked": c["isBookmarked"],
            "deploymentId": c["deploymentId"],
            "unreadCount": len(c["messages"]),
        }


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record retry delays instead of waiting them out; the clients' clock moves on by
    the delays recorded, as if they had been waited."""
    delays: list[float] = []

    async def fake_async_sleep(delay: float) -> None:
        delays.append(delay)

    monkeypatch.setattr(airia._client, "_sleep", delays.append)
    monkeypatch.setattr(airia._client, "_async_sleep", fake_async_sleep)
    monkeypatch.setattr(airia._base_client, "_monotonic", lambda: 1000.0 + sum(delays))
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

    def collect(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Drain an iterator method (``iter_messages``) into a list."""
        bound = getattr(self.client.conversations, method)
        if self.kind == "sync":
            return list(bound(*args, **kwargs))

        async def drain() -> list[Any]:
            return [item async for item in bound(*args, **kwargs)]

        return asyncio.run(drain())


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest, server: FakeServer, sleeps: list[float]):
    """Both clients, one at a time, behind the same call syntax."""
    return lambda **kwargs: SyncOrAsync(server, request.param, **kwargs)


MakeApi = Callable[..., SyncOrAsync]


@pytest.fixture
def run(server: FakeServer, sleeps, monkeypatch, capsys):
    """Run ``airia ARGS`` against the fake server; return (exit code, stdout, stderr)."""

    def factory(**kwargs):
        return AiriaClient(
            http_client=httpx.Client(transport=httpx.MockTransport(server)), **kwargs
        )

    monkeypatch.setattr(airia.cli, "client_factory", factory)
    monkeypatch.setenv("AIRIA_API_KEY", API_KEY)

    def run_cli(*argv: str):
        code = airia.cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run_cli
