"""Problem documents (RFC 9457): the members every error carries."""

from __future__ import annotations

import json

from airia_server.api.openapi import openapi_document
from airia_server.api.problems import problem_body


def test_a_problem_always_names_its_type_and_leaves_out_empty_members() -> None:
    body = json.loads(problem_body(404, "Conversation not found", "Conversation x", None))
    assert body == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "Conversation x",
        "message": "Conversation not found",
    }


def test_extra_members_join_the_problem() -> None:
    errors = [{"field": "userId", "message": "required"}]
    body = json.loads(problem_body(422, "Invalid", "Invalid", "/v1/Conversations", errors=errors))
    assert body["type"] == "about:blank" and body["instance"] == "/v1/Conversations"
    assert body["errors"] == errors


def test_the_document_says_type_is_always_there() -> None:
    schema = openapi_document()["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "message"} <= set(schema["required"])
