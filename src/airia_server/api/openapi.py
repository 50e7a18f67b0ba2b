"""The OpenAPI 3.1 document, built from the same msgspec structs the routes decode and encode."""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from airia_server import __version__
from airia_server.api import schemas as s

_ERRORS = {
    400: "Malformed JSON or invalid header",
    401: "Missing or invalid credentials",
    403: "Visible, but the caller's role does not allow this",
    404: "No such conversation (or item) visible to the caller",
    409: "The change conflicts with the current state",
    413: "Request body too large",
    415: "Body is not JSON",
    408: "The body stalled for longer than the server waits",
    416: "The requested range lies outside the file",
    429: "Rate limit exceeded; `Retry-After` says when to retry",
    431: "Request headers too large",
    422: "A field has the wrong type or value; `errors[].field` names it",
}
_BODY_ERRORS = (400, 413, 415, 422)
_SECURITY = [{"ApiKey": []}, {"Bearer": []}]


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _problems(*answers: tuple[int, str]) -> dict[str, Any]:
    """Responses for these (status, description) pairs, each a problem+json body."""
    return {
        str(status): {
            "description": description,
            "content": {"application/problem+json": {"schema": _ref("Problem")}},
        }
        for status, description in answers
    }


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _op(
    op_id: str,
    summary: str,
    *,
    ok: int = 200,
    response: str | None = None,
    response_schema: dict[str, Any] | None = None,
    body: str | None = None,
    errors: tuple[int, ...] = (),
    params: list[dict[str, Any]] | None = None,
    description: str | None = None,
    tag: str = "Conversations",
    keyed: bool = False,
) -> dict[str, Any]:
    """`keyed`: the operation honours `Idempotency-Key` (docs/api.md): the header, and
    its answers (409 while the first request with the key runs; 422 for the key reused
    on another request)."""
    if keyed:
        errors = (*errors, 409, 422)
        params = [*(params or []), _IDEMPOTENCY_KEY]
    responses: dict[str, Any] = {}
    if response or response_schema:
        responses[str(ok)] = {
            "description": "OK",
            "content": _json(response_schema or _ref(response)),
        }
    else:
        responses[str(ok)] = {"description": "Done"}
    # Any request may be refused for what every route checks: a malformed URL (400), a
    # missing credential (401), the rate limit (429), oversized headers (431); one with
    # a body also for its size, type, shape, or a stalled upload (408).
    codes = {400, 401, 429, 431, *errors, *(_BODY_ERRORS if body else ())}
    if body:
        codes.add(408)
    responses.update(_problems(*((code, _ERRORS[code]) for code in sorted(codes))))
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "tags": [tag],
        "security": _SECURITY,
        "responses": responses,
    }
    if description:
        op["description"] = description
    if body:
        op["requestBody"] = {"required": True, "content": _json(_ref(body))}
    if params:
        op["parameters"] = params
    return op


_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "1 to 255 printable ASCII characters: a retry with the same key and "
    "request gets the first answer (`Idempotent-Replayed: true`), and the request is done "
    "once. Kept 24 hours, per caller.",
}

_CONVERSATION_ID = _path(
    "conversationId", "The conversation's id. Any value that names no visible conversation is 404."
)
_USER_ID = _path("userId", "A participant's user id")


@cache
def openapi_document(max_page_size: int = 100) -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [
            s.CreateConversationRequest,
            s.UpdateConversationRequest,
            s.CreateConversationResponse,
            s.GetConversationResponse,
            s.ConversationFeedResponse,
            s.AddMessageRequest,
            s.AddMessageResponse,
            s.MessagePage,
            s.TruncateMessagesResponse,
            s.MarkAsReadResponse,
            s.ShareRequest,
            s.RoleRequest,
            s.Participant,
            s.TypingRequest,
            s.TypingResponse,
            s.PresenceRequest,
            s.PresenceResponse,
            s.WebSocketUrlResponse,
            s.ExternalIdentityRequest,
            s.ExternalIdentity,
            s.Base64UploadRequest,
            s.Attachment,
            s.Problem,
            s.Health,
        ],
        ref_template="#/components/schemas/{name}",
    )
    feed_params = [
        _query("PageNumber", {"type": "integer", "minimum": 1, "default": 1}, "1-based page"),
        _query(
            "PageSize",
            {"type": "integer", "minimum": 1, "maximum": max_page_size, "default": 20},
            "Items per page",
        ),
        _query(
            "SortBy",
            {"type": "string", "enum": ["createdAt", "updatedAt", "title"], "default": "updatedAt"},
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
            "Extension: with an API key, only the conversations this user takes part in",
        ),
        _query(
            "cursor",
            {"type": "string", "maxLength": 512},
            "Extension: the `nextCursor` of the previous page (same SortBy and "
            "SortDirection); PageNumber is then ignored, and a deep page costs what the "
            "first does",
        ),
    ]
    message_params = [
        _query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
            "Messages per page",
        ),
        _query(
            "order",
            {"type": "string", "enum": ["asc", "desc"], "default": "asc"},
            "Oldest first (asc) or newest first (desc)",
        ),
        _query("cursor", {"type": "string"}, "The `nextCursor` of the previous page"),
    ]
    base = "/v1/Conversations/{conversationId}"
    paths: dict[str, Any] = {
        "/v1/Conversations": {
            "post": _op(
                "createConversation",
                "Create a conversation",
                ok=201,
                response="CreateConversationResponse",
                body="CreateConversationRequest",
                errors=(403,),
                keyed=True,
            ),
        },
        "/v1/Conversations/feed": {
            "get": _op(
                "getConversationsFeed",
                "A page of the caller's conversations",
                response="ConversationFeedResponse",
                errors=(403, 422),
                params=feed_params,
                description=(
                    "A bearer user's feed holds the conversations they take part in; an API "
                    "key's holds the whole tenant's, or with `userId` (an extension) that "
                    "user's. Parameter names are case-insensitive."
                ),
            ),
        },
        base: {
            "parameters": [_CONVERSATION_ID],
            "get": _op(
                "getConversation",
                "Get a conversation with its messages",
                response="GetConversationResponse",
                errors=(404,),
            ),
            "put": _op(
                "updateConversation",
                "Update a conversation (Owner)",
                response="GetConversationResponse",
                body="UpdateConversationRequest",
                errors=(403, 404),
                description="Fields absent or null keep their value.",
                keyed=True,
            ),
            "delete": _op(
                "deleteConversation",
                "Delete a conversation and everything that belongs to it (Owner)",
                ok=204,
                errors=(403, 404),
                keyed=True,
            ),
        },
        f"{base}/messages": {
            "parameters": [_CONVERSATION_ID],
            "post": _op(
                "addMessage",
                "Add a message (Collaborator)",
                ok=201,
                response="AddMessageResponse",
                body="AddMessageRequest",
                errors=(403, 404),
                keyed=True,
            ),
            "get": _op(
                "listMessages",
                "A page of messages (extension)",
                response="MessagePage",
                errors=(404, 422),
                params=message_params,
            ),
        },
        f"{base}/messages/{{messageId}}/truncate": {
            "parameters": [_CONVERSATION_ID, _path("messageId", "The first message to delete")],
            "delete": _op(
                "truncateMessages",
                "Delete a message and every later one (Owner)",
                response="TruncateMessagesResponse",
                errors=(403, 404),
                keyed=True,
            ),
        },
        f"{base}/mark-as-read": {
            "parameters": [_CONVERSATION_ID],
            "patch": _op(
                "markAsRead",
                "Record the caller's read position",
                response="MarkAsReadResponse",
                errors=(403, 404),
                params=[
                    _query("userId", {"type": "string"}, "With an API key: whose read position")
                ],
            ),
        },
        f"{base}/share": {
            "parameters": [_CONVERSATION_ID],
            "post": _op(
                "shareConversation",
                "Share with a user, or change their role (Owner)",
                response="Participant",
                body="ShareRequest",
                errors=(403, 404, 409),
            ),
        },
        f"{base}/participants": {
            "parameters": [_CONVERSATION_ID],
            "get": _op(
                "listParticipants",
                "Who takes part, with which role",
                response_schema={"type": "array", "items": _ref("Participant")},
                errors=(404,),
            ),
        },
        f"{base}/participants/{{userId}}/role": {
            "parameters": [_CONVERSATION_ID, _USER_ID],
            "put": _op(
                "updateParticipantRole",
                "Change a participant's role (Owner)",
                response="Participant",
                body="RoleRequest",
                errors=(403, 404, 409),
                keyed=True,
            ),
        },
        f"{base}/participants/{{userId}}": {
            "parameters": [_CONVERSATION_ID, _USER_ID],
            "delete": _op(
                "removeParticipant",
                "Unshare (Owner), or leave (any participant, for themselves)",
                response="Participant",
                errors=(403, 404, 409),
                keyed=True,
            ),
        },
        f"{base}/typing": {
            "parameters": [_CONVERSATION_ID],
            "post": _op(
                "sendTyping",
                "Broadcast a typing indicator (Collaborator; not stored)",
                response="TypingResponse",
                body="TypingRequest",
                errors=(403, 404),
            ),
        },
        f"{base}/presence": {
            "parameters": [_CONVERSATION_ID],
            "post": _op(
                "sendPresence",
                "Broadcast presence (Collaborator; not stored)",
                response="PresenceResponse",
                body="PresenceRequest",
                errors=(403, 404),
            ),
        },
        f"{base}/websocket-url": {
            "parameters": [_CONVERSATION_ID],
            "get": _op(
                "getWebSocketUrl",
                "A fresh websocketUrl (extension; tickets expire)",
                response="WebSocketUrlResponse",
                errors=(404,),
            ),
        },
        f"{base}/ws": {
            "parameters": [_CONVERSATION_ID],
            "get": {
                "operationId": "openConversationSocket",
                "summary": "The conversation's real-time channel: a WebSocket (docs/realtime.md)",
                "description": "Open `websocketUrl` as it is given, with a WebSocket client. "
                "The ticket in its query is the credential; `after=N` resumes after "
                "sequence N. A refused ticket is 403 before the upgrade. Asked for as plain "
                "HTTP (without `Upgrade: websocket`, as some proxies forward it) the answer "
                "is 426.",
                "tags": ["Conversations"],
                "security": [],
                "parameters": [
                    {
                        "name": "ticket",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "From `websocketUrl`",
                    },
                    {
                        "name": "after",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^[0-9]+$"},
                        "description": "Resume after this sequence",
                    },
                ],
                "responses": {
                    "101": {"description": "Switching to the WebSocket protocol"},
                    "403": {
                        "description": "The ticket is missing, invalid, expired or "
                        "for another conversation"
                    },
                    **_problems(
                        (400, _ERRORS[400]),
                        (426, "Not a WebSocket upgrade"),
                        (431, _ERRORS[431]),
                    ),
                },
            },
        },
        f"{base}/external-identities": {
            "parameters": [_CONVERSATION_ID],
            "get": _op(
                "listExternalIdentities",
                "The chat threads mapped to this conversation",
                response_schema={"type": "array", "items": _ref("ExternalIdentity")},
                errors=(404,),
            ),
            "post": _op(
                "addExternalIdentity",
                "Map a chat thread to this conversation (Owner)",
                ok=201,
                response="ExternalIdentity",
                body="ExternalIdentityRequest",
                errors=(403, 404, 409),
                description="The same triple mapped twice in a tenant is 409; the "
                "problem's `conversationId` names the conversation it points to.",
            ),
        },
        f"{base}/external-identities/{{identityId}}": {
            "parameters": [_CONVERSATION_ID, _path("identityId", "The mapping's id")],
            "delete": _op(
                "removeExternalIdentity",
                "Remove a mapping (Owner)",
                ok=204,
                errors=(403, 404),
                keyed=True,
            ),
        },
        "/v1/Conversations/external-identities/lookup": {
            "get": _op(
                "findConversationByExternalIdentity",
                "The conversation a chat thread is mapped to (extension)",
                response="GetConversationResponse",
                errors=(404, 422),
                params=[
                    {
                        **_query("externalSystem", {"type": "string"}, "e.g. Slack"),
                        "required": True,
                    },
                    {
                        **_query("externalChannelId", {"type": "string"}, "Channel id"),
                        "required": True,
                    },
                    {
                        **_query("externalThreadId", {"type": "string"}, "Thread id"),
                        "required": True,
                    },
                ],
            ),
        },
        f"{base}/attachments": {
            "parameters": [_CONVERSATION_ID],
            "get": _op(
                "listAttachments",
                "The conversation's attachments, with download links",
                response_schema={"type": "array", "items": _ref("Attachment")},
                errors=(404,),
            ),
        },
        f"{base}/agent-attachments": {
            "parameters": [_CONVERSATION_ID],
            "post": {
                **_op(
                    "uploadAttachment",
                    "Upload a file (multipart, part `file`; Collaborator)",
                    response="Attachment",
                    errors=(400, 403, 404, 413, 415, 422),
                    keyed=True,
                ),
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {
                                    "file": {"type": "string", "format": "binary"},
                                    "source": {"type": "string", "enum": ["user", "agent"]},
                                },
                            },
                        }
                    },
                },
            },
        },
        f"{base}/agent-attachments/base64": {
            "parameters": [_CONVERSATION_ID],
            "post": _op(
                "uploadAttachmentBase64",
                "Upload a file as base64 JSON (Collaborator)",
                response="Attachment",
                body="Base64UploadRequest",
                errors=(403, 404),
                keyed=True,
            ),
        },
        "/v1/attachments/{attachmentId}/content": {
            "parameters": [
                _path("attachmentId", "The attachment's blobId"),
                {**_query("expires", {"type": "string"}, "From the signed url"), "required": True},
                {
                    **_query("signature", {"type": "string"}, "From the signed url"),
                    "required": True,
                },
            ],
            "get": {
                "operationId": "downloadAttachment",
                "tags": ["Conversations"],
                "summary": "The file's bytes through its signed link (no credentials; ranges)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The whole file",
                        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    "206": {
                        "description": "The requested range",
                        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    **_problems(
                        (400, _ERRORS[400]),
                        (403, "Invalid or expired link"),
                        (404, "The attachment no longer exists"),
                        (416, _ERRORS[416]),
                        (431, _ERRORS[431]),
                    ),
                },
            },
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "The process is up",
                "tags": ["Operations"],
                "responses": {"200": {"description": "OK", "content": _json(_ref("Health"))}},
            },
        },
        "/readyz": {
            "get": {
                "operationId": "ready",
                "summary": "Database writable, schema current, Redis connected if configured",
                "tags": ["Operations"],
                "responses": {
                    "200": {"description": "Ready", "content": _json({"type": "object"})},
                    "503": {
                        "description": "Not ready; `checks` says why",
                        "content": _json({"type": "object"}),
                    },
                },
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Airia Conversations",
            "version": __version__,
            "description": (
                "Conversations, their messages and participants. Every error is "
                "application/problem+json with a `message`. Each conversation's "
                "`websocketUrl` opens its real-time channel (see docs/realtime.md)."
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
