"""Routes for a conversation's messages and the caller's read position."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from airia_server.api.bodies import read_json
from airia_server.api.common import (
    choice,
    int_param,
    json_response,
    query_params,
    resource,
    user_param,
)
from airia_server.api.conversations import message_view
from airia_server.api.deps import current_principal, services
from airia_server.api.idempotency import idempotent, resource_id
from airia_server.api.schemas import (
    AddMessageRequest,
    AddMessageResponse,
    MarkAsReadResponse,
    MessagePage,
    TruncateMessagesResponse,
)
from airia_server.domain.auth import Principal
from airia_server.errors import ValidationFailed
from airia_server.ids import parse_id
from airia_server.storage.base import MessageRecord
from airia_server.text import is_ascii_digits

_add_decoder = msgspec.json.Decoder(AddMessageRequest)
MAX_PAGE = 200


async def add_message(request: Request) -> Response:
    principal = await current_principal(request)
    svc = services(request)
    body = await read_json(request, _add_decoder, svc.settings.max_body_bytes)
    stored = await svc.messages.add(
        principal,
        request.path_params["conversation_id"],
        message=body.message,
        role=body.role,
        images=body.images,
        image_attachment_ids=body.image_attachment_ids,
        user_id=body.user_id,
        message_id=resource_id(request),
    )
    return _added(stored)


def _added(stored: MessageRecord) -> Response:
    return json_response(
        AddMessageResponse(
            message_id=stored.id,
            conversation_id=stored.conversation_id,
            created_at=stored.created_at,
        ),
        status=201,
    )


async def _recover_added(
    request: Request, principal: Principal, message_id: str
) -> Response | None:
    """The append's answer, from the message it stored (see `api.idempotency`); the
    key is the caller's own, and names this path, so the conversation is theirs."""
    conversation_id = parse_id(request.path_params["conversation_id"])
    if conversation_id is None:
        return None
    stored = await services(request).store.find_message(conversation_id, message_id)
    return _added(stored) if stored is not None else None


def _cursor(params: dict[str, str]) -> int | None:
    raw = params.get("cursor")
    if not raw:
        return None
    if not is_ascii_digits(raw) or len(raw) > 18:
        raise ValidationFailed(
            "Invalid value for 'cursor': use the nextCursor of a previous page",
            errors=[{"field": "cursor", "message": "not a cursor this server issued"}],
        )
    return int(raw)


async def list_messages(request: Request) -> Response:
    principal = await current_principal(request)
    params = query_params(request)
    limit = int_param(params, "limit", 50, 1, MAX_PAGE)
    order = choice(params, "order", {"asc": "asc", "desc": "desc"}, "asc")
    items, next_position = await services(request).messages.page(
        principal,
        request.path_params["conversation_id"],
        cursor=_cursor(params),
        limit=limit,
        descending=order == "desc",
    )
    return json_response(
        MessagePage(
            items=[message_view(m) for m in items],
            next_cursor=str(next_position) if next_position is not None else None,
        )
    )


async def truncate_messages(request: Request) -> Response:
    principal = await current_principal(request)
    message_id, result = await services(request).messages.truncate(
        principal, request.path_params["conversation_id"], request.path_params["message_id"]
    )
    return json_response(
        TruncateMessagesResponse(
            conversation_id=result.event.conversation_id,
            from_message_id=message_id,
            deleted_count=result.deleted_count,
            remaining_count=result.remaining_count,
        )
    )


async def mark_as_read(request: Request) -> Response:
    principal = await current_principal(request)
    user_id = user_param(query_params(request))
    conversation_id, reader, position = await services(request).messages.mark_read(
        principal, request.path_params["conversation_id"], user_id
    )
    return json_response(
        MarkAsReadResponse(
            conversation_id=conversation_id,
            user_id=reader,
            last_read_message_id=position.last_read_message_id,
            read_at=position.read_at,
        )
    )


routes = [
    resource(
        "/v1/Conversations/{conversation_id}/messages",
        POST=idempotent(add_message, _recover_added),
        GET=list_messages,
    ),
    Route(
        "/v1/Conversations/{conversation_id}/messages/{message_id}/truncate",
        idempotent(truncate_messages),
        methods=["DELETE"],
    ),
    Route("/v1/Conversations/{conversation_id}/mark-as-read", mark_as_read, methods=["PATCH"]),
]
