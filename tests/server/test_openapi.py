"""The OpenAPI document is whole: every reference resolves, every API route is in it."""

from __future__ import annotations

import json
import re

from starlette.routing import Route

from airia_server.api.openapi import openapi_document
from airia_server.app import create_app
from airia_server.config import Settings

_UNDOCUMENTED = ("/docs", "/openapi.json", "/metrics", "/console")


def test_every_schema_reference_resolves() -> None:
    document = openapi_document()
    refs = set(re.findall(r"#/components/schemas/(\w+)", json.dumps(document)))
    assert refs, "no references at all"
    assert refs <= set(document["components"]["schemas"])


def test_every_api_route_and_method_is_documented(tmp_path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}"))
    documented = {
        (path, method.upper())
        for path, item in openapi_document()["paths"].items()
        for method in item
        if method != "parameters"
    }
    for route in app.router.routes:
        if not isinstance(route, Route) or route.path.startswith(_UNDOCUMENTED):
            continue
        path = re.sub(r"\{(\w+)\}", lambda m: "{" + _camel(m.group(1)) + "}", route.path)
        if path.endswith("/") and path != "/":
            continue  # the trailing-slash twins of documented paths
        for method in route.methods - {"HEAD"}:
            assert (path, method) in documented, f"{method} {path} is not in the document"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


KEYED = {
    ("/v1/Conversations", "post"),
    ("/v1/Conversations/{conversationId}", "put"),
    ("/v1/Conversations/{conversationId}", "delete"),
    ("/v1/Conversations/{conversationId}/messages", "post"),
    ("/v1/Conversations/{conversationId}/messages/{messageId}/truncate", "delete"),
    ("/v1/Conversations/{conversationId}/participants/{userId}/role", "put"),
    ("/v1/Conversations/{conversationId}/participants/{userId}", "delete"),
    ("/v1/Conversations/{conversationId}/external-identities/{identityId}", "delete"),
    ("/v1/Conversations/{conversationId}/agent-attachments", "post"),
    ("/v1/Conversations/{conversationId}/agent-attachments/base64", "post"),
}


def test_the_operations_that_honour_idempotency_key_document_it() -> None:
    """The header, and what it may answer: 409 while the first request runs, 422 for a
    key reused on another request (docs/api.md, Retries)."""
    paths = openapi_document()["paths"]
    for path, method in KEYED:
        op = paths[path][method]
        headers = [p["name"] for p in op.get("parameters", []) if p["in"] == "header"]
        assert headers == ["Idempotency-Key"], (path, method)
        assert {"409", "422"} <= set(op["responses"]), (path, method)
    for path, item in paths.items():
        for method, op in item.items():
            if method != "parameters" and (path, method) not in KEYED:
                names = [p["name"] for p in op.get("parameters", [])]
                assert "Idempotency-Key" not in names, (path, method)
