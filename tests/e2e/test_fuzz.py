"""Schemathesis against the live server's own /openapi.json: every operation, positive and
negative data, authenticated with the API key. Zero server errors, zero responses that
break the document (status, content type, headers, body schema), no hang (per-request
timeout).

CI form: FUZZ_EXAMPLES (50) examples per operation, at least 1,000 requests per backend.
Long form: `AIRIA_FUZZ_EXAMPLES=1000 make fuzz`.

Generated path ids are random, so most would be 404; about two thirds of them are
swapped for ids that exist (conversations, messages, participants, identities,
attachments with a valid download signature) so the fuzzer reaches the handlers.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import backends

from .support import (
    LiveServer,
    start_server,
    stop_process,
)

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("AIRIA_FUZZ_EXAMPLES", "50"))
MIN_REQUESTS = 1000
REQUEST_TIMEOUT = 10.0
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
COLLECTION = "/v1/Conversations"


class Pool:
    """Things that exist on the server, to put into generated paths."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.base_url, timeout=REQUEST_TIMEOUT)
        self.headers = server.headers()
        self.conversations: list[dict[str, Any]] = []
        for n in range(4):
            self.conversations.append(self._seed(n))

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, path, json=body, headers=self.headers)
        assert response.is_success, (method, path, response.status_code, response.text)
        return response.json() if response.content else None

    def new_conversation(self) -> str:
        return self._call("POST", COLLECTION, {"userId": "fuzz_owner", "title": "t"})[
            "conversationId"
        ]

    def _seed(self, n: int) -> dict[str, Any]:
        cid = self.new_conversation()
        messages = [
            self._call("POST", f"{COLLECTION}/{cid}/messages", {"message": f"m{i}"})["messageId"]
            for i in range(3)
        ]
        self._call("POST", f"{COLLECTION}/{cid}/share", {"userId": f"fuzz_peer{n}"})
        identity = self._call(
            "POST",
            f"{COLLECTION}/{cid}/external-identities",
            {"externalSystem": "slack", "externalChannelId": f"c{n}", "externalThreadId": "t"},
        )["id"]
        content = base64.b64encode(b"fuzz bytes %d" % n).decode()
        attachment = self._call(
            "POST",
            f"{COLLECTION}/{cid}/agent-attachments/base64",
            {"base64Content": content, "fileName": f"f{n}.txt", "contentType": "text/plain"},
        )
        query = parse_qs(urlsplit(attachment["url"]).query)
        return {
            "conversationId": cid,
            "messageId": messages,
            "userId": ["fuzz_owner", f"fuzz_peer{n}"],
            "identityId": [identity],
            "attachmentId": attachment["blobId"],
            "expires": query["expires"][0],
            "signature": query["signature"][0],
        }

    def substitute(self, case: Any) -> None:
        """Deterministically (by the generated values) put existing ids into the path."""
        params = case.path_parameters
        if not params:
            return
        pick = zlib.crc32(json.dumps(params, sort_keys=True, default=str).encode())
        if pick % 3 == 0:
            return  # keep the generated ids: the 404 path gets fuzzed too
        chosen = self.conversations[pick % len(self.conversations)]
        path = case.operation.path
        if path == "/v1/attachments/{attachmentId}/content":
            params["attachmentId"] = chosen["attachmentId"]
            if pick % 2 and isinstance(case.query, dict):
                case.query["expires"] = chosen["expires"]
                case.query["signature"] = chosen["signature"]
            return
        if "conversationId" in params:
            if path == f"{COLLECTION}/{{conversationId}}" and case.method.upper() == "DELETE":
                params["conversationId"] = self.new_conversation()
            else:
                params["conversationId"] = chosen["conversationId"]
        for name in ("messageId", "userId", "identityId"):
            if name in params and pick % 5:
                options = chosen[name]
                params[name] = options[(pick // 7) % len(options)]


class Tally:
    def __init__(self) -> None:
        self.requests = 0
        self.statuses: collections.Counter[int] = collections.Counter()
        self.failures: dict[tuple[str, str], str] = {}
        """(operation, first line of the failure) -> one reproducer."""
        self.skipped: list[str] = []


def fuzz_operation(operation: Any, mode: GenerationMode, server, pool, tally, session) -> None:
    try:
        strategy = operation.as_strategy(generation_mode=mode)
    except Exception as exc:  # e.g. nothing to make negative
        tally.skipped.append(f"{operation.label} {mode.value}: {exc!r}")
        return

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=os.environ.get("AIRIA_FUZZ_RANDOM") != "1",
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the server's state moves on
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        pool.substitute(case)
        tally.requests += 1
        try:
            response = case.call(
                base_url=server.base_url,
                session=session,
                headers=server.headers(),
                timeout=REQUEST_TIMEOUT,
            )
        except requests.RequestException as exc:  # a hang or a dropped connection
            key = (operation.label, f"transport: {type(exc).__name__}")
            tally.failures.setdefault(key, f"{case.method} {case.formatted_path} {exc!r}")
            return
        tally.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except BaseException as exc:  # schemathesis' FailureGroup is a BaseExceptionGroup
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            parts = getattr(exc, "exceptions", None) or [exc]
            first = "; ".join(
                f"{type(p).__name__}: {(str(p).strip().splitlines() or [''])[0]}" for p in parts
            )
            if response.status_code not in (200, 201, 204, 206):
                # the same undeclared status on one operation is one failure
                first = f"[{response.status_code}] {first}"
            key = (operation.label, first)
            tally.failures.setdefault(
                key,
                f"{case.method} {response.request.url} -> {response.status_code} "
                f"{response.text[:300]}",
            )

    try:
        run()
    except Unsatisfiable:  # e.g. no negative form of an operation without inputs
        tally.skipped.append(f"{operation.label} {mode.value}: no input of this kind")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_fuzz_every_operation(backend: str, tmp_path: Path) -> None:
    drop = None
    if backend == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'a.db'}"
    else:
        backends.require(backends.postgres_problem())
        database_url = drop = backends.create_database_sync()
    server = start_server(tmp_path, database_url=database_url, AIRIA_LOG_LEVEL="WARNING")
    tally = Tally()
    try:
        with requests.Session() as session:
            schema = schemathesis.openapi.from_url(
                f"{server.base_url}/openapi.json", timeout=REQUEST_TIMEOUT
            )
            pool = Pool(server)
            operations = 0
            try:
                for result in schema.get_all_operations():
                    operation = result.ok()
                    operations += 1
                    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                        fuzz_operation(operation, mode, server, pool, tally, session)
            finally:
                pool.http.close()
        alive = server.process.poll() is None
    finally:
        stop_process(server.process)
        if drop:
            backends.drop_database_sync(drop)
    statuses = dict(sorted(tally.statuses.items()))
    print(
        f"\nfuzz[{backend}]: {tally.requests} requests over {operations} operations "
        f"({EXAMPLES} examples per operation and mode), statuses {statuses}, "
        f"{len(tally.failures)} distinct failures"
    )
    for note in tally.skipped:
        print("  not generated:", note)
    report = "\n\n".join(
        f"{op}: {first}\n  {example}" for (op, first), example in sorted(tally.failures.items())
    )
    assert alive, "airia-server died while fuzzed:\n" + server.stderr_text()
    assert operations >= 26
    assert tally.requests >= MIN_REQUESTS
    assert not tally.failures, report
    assert "Traceback" not in server.stderr_text(), server.stderr_text()[-5000:]


def test_every_reference_in_the_document_resolves(tmp_path: Path) -> None:
    """A `$ref` to a schema the document does not hold leaves clients (and the
    fuzzer) unable to check that body at all."""
    server = start_server(tmp_path, AIRIA_LOG_LEVEL="WARNING")
    try:
        document = httpx.get(f"{server.base_url}/openapi.json", timeout=REQUEST_TIMEOUT).json()
    finally:
        stop_process(server.process)
    defined = set(document.get("components", {}).get("schemas", {}))
    missing: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                if ref.rsplit("/", 1)[1] not in defined:
                    missing.add(ref)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert not missing, f"unresolvable references in /openapi.json: {sorted(missing)}"
