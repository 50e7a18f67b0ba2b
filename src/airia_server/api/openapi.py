"""The OpenAPI 3.1 document, built from the same msgspec structs the routes decode and encode."""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from airia_server import __version__
from airia_server.api import schemas as s

_PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
_ID_PARAM = {
    "name": "conversationId",
    "in": "path",
    "required": True,
    "description": "The conversation's id. Any value that names no visible conversation is 404.",
    "schema": {"type": "string"},
}


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed JSON or invalid header",
        401: "Missing or invalid credentials",
        403: "Visible, but the caller may not do this",
        404: "No such conversation visible to the caller",
        413: "Request body too large",
        415: "Body is not JSON",
        422: "A field has the wrong type or value; `errors[].field` names it",
    }
    return {str(c): {"description": text[c], "content": _PROBLEM} for c in codes}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


@cache
def openapi_document(max_page_size: int = 100) -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [
            s.CreateConversationRequest,
            s.UpdateConversationRequest,
            s.CreateConversationResponse,
            s.GetConversationResponse,
            s.ConversationFeedResponse,
            s.Problem,
            s.Health,
        ],
        ref_template="#/components/schemas/{name}",
    )
    security = [{"ApiKey": []}, {"Bearer": []}]
    paths = {
        "/v1/Conversations": {
            "post": {
                "operationId": "createConversation",
                "summary": "Create a conversation",
                "tags": ["Conversations"],
                "security": security,
                "requestBody": {"required": True, "content": _json("CreateConversationRequest")},
                "responses": {
                    "201": {
                        "description": "Created",
                        "content": _json("CreateConversationResponse"),
                    },
                    **_errors(400, 401, 403, 413, 415, 422),
                },
            }
        },
        "/v1/Conversations/feed": {
            "get": {
                "operationId": "getConversationsFeed",
                "summary": "A page of the caller's conversations",
                "description": (
                    "A bearer user's feed holds their own conversations; an API key's holds "
                    "the whole tenant's, narrowed to one user by `userId` (an extension of "
                    "this implementation). Parameter names are case-insensitive."
                ),
                "tags": ["Conversations"],
                "security": security,
                "parameters": [
                    _query(
                        "PageNumber",
                        {"type": "integer", "minimum": 1, "default": 1},
                        "1-based page number",
                    ),
                    _query(
                        "PageSize",
                        {"type": "integer", "minimum": 1, "maximum": max_page_size, "default": 20},
                        "Items per page",
                    ),
                    _query(
                        "SortBy",
                        {
                            "type": "string",
                            "enum": ["createdAt", "updatedAt", "title"],
                            "default": "updatedAt",
                        },
                        "Sort field",
                    ),
                    _query(
                        "SortDirection",
                        {"type": "string", "enum": ["asc", "desc"], "default": "desc"},
                        "Sort direction",
                    ),
                    _query(
                        "filter",
                        {"type": "string", "maxLength": 500},
                        "Only conversations whose title contains this text (case-insensitive)",
                    ),
                    _query(
                        "userId",
                        {"type": "string"},
                        "Extension: with an API key, only this user's conversations",
                    ),
                ],
                "responses": {
                    "200": {"description": "OK", "content": _json("ConversationFeedResponse")},
                    **_errors(401, 403, 422),
                },
            }
        },
        "/v1/Conversations/{conversationId}": {
            "parameters": [_ID_PARAM],
            "get": {
                "operationId": "getConversation",
                "summary": "Get a conversation",
                "tags": ["Conversations"],
                "security": security,
                "responses": {
                    "200": {"description": "OK", "content": _json("GetConversationResponse")},
                    **_errors(401, 404),
                },
            },
            "put": {
                "operationId": "updateConversation",
                "summary": "Update a conversation",
                "description": "Fields that are absent or null keep their value.",
                "tags": ["Conversations"],
                "security": security,
                "requestBody": {"required": True, "content": _json("UpdateConversationRequest")},
                "responses": {
                    "200": {"description": "OK", "content": _json("GetConversationResponse")},
                    **_errors(400, 401, 403, 404, 413, 415, 422),
                },
            },
            "delete": {
                "operationId": "deleteConversation",
                "summary": "Delete a conversation and everything that belongs to it",
                "tags": ["Conversations"],
                "security": security,
                "responses": {"204": {"description": "Deleted"}, **_errors(401, 403, 404)},
            },
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "The process is up",
                "tags": ["Operations"],
                "responses": {"200": {"description": "OK", "content": _json("Health")}},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Airia Conversations",
            "version": __version__,
            "description": (
                "Conversations: create, read, update, delete, and a feed. Every error is "
                "application/problem+json with a `message`. Each conversation's "
                "`websocketUrl` opens its real-time channel (see the docs)."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-KEY"},
                "Bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    }
