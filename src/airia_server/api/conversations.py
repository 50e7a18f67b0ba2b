"""HTTP routes of /v1/Conversations: parse, authorize, call the service, shape the answer."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from airia_server import urlsafe
from airia_server.api.bodies import read_json
from airia_server.api.common import (
    choice,
    int_param,
    json_response,
    query_params,
    resource,
    user_param,
)
from airia_server.api.deps import current_principal, services, websocket_url
from airia_server.api.idempotency import idempotent, resource_id
from airia_server.api.schemas import (
    ConversationFeedResponse,
    ConversationMessage,
    CreateConversationRequest,
    CreateConversationResponse,
    GetConversationResponse,
    UpdateConversationRequest,
)
from airia_server.domain.auth import Principal
from airia_server.errors import ValidationFailed, conversation_not_found
from airia_server.storage.base import ConversationRecord, FeedQuery, MessageRecord

_create_decoder = msgspec.json.Decoder(CreateConversationRequest)
_update_decoder = msgspec.json.Decoder(UpdateConversationRequest)
_SORT_FIELDS = {"createdat": "createdAt", "updatedat": "updatedAt", "title": "title"}


_NO_MESSAGES = msgspec.Raw(b"[]")


async def shown_messages(svc, record: ConversationRecord) -> msgspec.Raw:
    """The messages a conversation's GET shows, as JSON: all of them, oldest first, up
    to AIRIA_CONVERSATION_MESSAGES_LIMIT and AIRIA_CONVERSATION_MESSAGES_MAX_BYTES (the
    newest ones); longer conversations are read page by page through GET .../messages,
    so one GET never carries hundreds of megabytes."""
    if not record.message_count:
        return _NO_MESSAGES
    settings = svc.settings
    return msgspec.Raw(
        await svc.store.recent_messages_json(
            record.id,
            settings.conversation_messages_limit,
            settings.conversation_messages_max_bytes,
        )
    )


def message_view(m: MessageRecord) -> ConversationMessage:
    return ConversationMessage(
        id=m.id,
        conversation_id=m.conversation_id,
        message=m.message,
        role=m.role,
        images=m.images,
        image_attachment_ids=m.image_attachment_ids,
        created_at=m.created_at,
        updated_at=m.updated_at,
        user_id=m.user_id,
    )


def conversation_view(
    request: Request, principal, record: ConversationRecord, messages: msgspec.Raw
) -> GetConversationResponse:
    return GetConversationResponse(
        conversation_id=record.id,
        user_id=record.user_id,
        title=record.title,
        created_at=record.created_at,
        updated_at=record.updated_at,
        is_bookmarked=record.is_bookmarked,
        deployment_id=record.deployment_id,
        data_source_files=record.data_source_files,
        websocket_url=websocket_url(request, principal, record.id),
        messages=messages,  # type: ignore[arg-type]  # already JSON: list[ConversationMessage]
        policy_redactions=None,
        last_execution_status=record.last_execution_status,
        last_execution_id=record.last_execution_id,
        message_count=record.message_count,
        last_sequence=record.last_sequence,
    )


async def create_conversation(request: Request) -> Response:
    principal = await current_principal(request)
    svc = services(request)
    body = await read_json(request, _create_decoder, svc.settings.max_body_bytes)
    record = await svc.conversations.create(
        principal,
        user_id=body.user_id,
        title=body.title,
        deployment_id=body.deployment_id,
        data_source_files=body.data_source_files,
        is_bookmarked=bool(body.is_bookmarked),
        conversation_id=resource_id(request),
    )
    return _created(request, principal, record)


def _created(request: Request, principal: Principal, record: ConversationRecord) -> Response:
    return json_response(
        CreateConversationResponse(
            conversation_id=record.id,
            user_id=record.user_id,
            websocket_url=websocket_url(request, principal, record.id),
            deployment_id=record.deployment_id,
            title=record.title,
            created_at=record.created_at,
            updated_at=record.updated_at,
            is_bookmarked=record.is_bookmarked,
            data_source_files=record.data_source_files,
        ),
        status=201,
    )


def _renew_websocket_url(request: Request, principal: Principal, answer: dict) -> None:
    """A replayed create's `websocketUrl`, with a ticket of today (see `api.idempotency`)."""
    if isinstance(answer.get("conversationId"), str) and "websocketUrl" in answer:
        answer["websocketUrl"] = websocket_url(request, principal, answer["conversationId"])


async def _recover_created(
    request: Request, principal: Principal, conversation_id: str
) -> Response | None:
    """The create's answer, from the conversation it made (see `api.idempotency`)."""
    record = await services(request).store.get_conversation(principal.tenant_id, conversation_id)
    return _created(request, principal, record) if record is not None else None


async def get_conversation(request: Request) -> Response:
    return await _conversation_now(request, await current_principal(request))


async def _conversation_now(request: Request, principal: Principal) -> Response:
    """The conversation as `principal` may see it now: a GET's answer, and a keyed
    update's replay (whose first answer is not kept: it holds the messages)."""
    svc = services(request)
    record = await svc.conversations.get(principal, request.path_params["conversation_id"])
    # The record first: its last_sequence is then never newer than the messages read
    # after it (each store's reads see every commit made before they start), so
    # resuming the channel after it cannot skip a message this answer lacks.
    messages = await shown_messages(svc, record)
    return json_response(conversation_view(request, principal, record, messages))


async def update_conversation(request: Request) -> Response:
    principal = await current_principal(request)
    svc = services(request)
    conversation_id = request.path_params["conversation_id"]
    body = await read_json(request, _update_decoder, svc.settings.max_body_bytes)
    changes: dict[str, Any] = {"title": body.title}
    for field in (
        "data_source_files",
        "is_bookmarked",
        "last_execution_status",
        "last_execution_id",
    ):
        value = getattr(body, field)
        if value is not None:
            changes[field] = value
    record = await svc.conversations.update(principal, conversation_id, changes)
    messages = await shown_messages(svc, record)
    return json_response(conversation_view(request, principal, record, messages))


async def delete_conversation(request: Request) -> Response:
    principal = await current_principal(request)
    await services(request).conversations.delete(principal, request.path_params["conversation_id"])
    return Response(status_code=204)


async def conversations_feed(request: Request) -> Response:
    principal = await current_principal(request)
    svc = services(request)
    # Query parameter names are case-insensitive, as on the reference platform.
    params = query_params(request)
    max_size = svc.settings.feed_max_page_size
    page_number = int_param(params, "PageNumber", 1, 1, 1_000_000)
    page_size = int_param(params, "PageSize", 20, 1, max_size)
    sort_by = choice(params, "SortBy", _SORT_FIELDS, "updatedAt")
    direction = choice(params, "SortDirection", {"asc": "asc", "desc": "desc"}, "desc")
    text = params.get("filter") or None
    if text is not None and len(text) > 500:
        raise ValidationFailed(
            "Invalid value for 'filter': at most 500 characters",
            errors=[{"field": "filter", "message": "at most 500 characters"}],
        )
    user_id = user_param(params)
    after = _feed_cursor(params.get("cursor"), sort_by, direction)
    page = await svc.conversations.feed(
        principal,
        FeedQuery(
            tenant_id=principal.tenant_id,
            user_id=user_id,
            page_number=page_number,
            # By cursor, one row more says whether a next page exists.
            page_size=page_size + 1 if after is not None else page_size,
            sort_by=sort_by,
            descending=direction == "desc",
            title_filter=text,
            after=after,
        ),
    )
    # `nextCursor` only where a next page exists: never on the last page, even full.
    if after is not None:
        more = len(page.items) > page_size
        page.items = page.items[:page_size]
    else:
        more = (page_number - 1) * page_size + len(page.items) < page.total_count
    next_cursor = None
    # The total and the page are two reads: a conversation deleted between them can
    # leave a page empty that the total says is not the last.
    if more and page.items and sort_by != "title":
        last = page.items[-1]
        key = last.updated_at if sort_by == "updatedAt" else last.created_at
        next_cursor = _encode_cursor(
            [_CURSOR_VERSION, sort_by, direction, key, last.conversation_id]
        )
    # FeedItem is ConversationFeedItem's shape: encoded as the store made it.
    return json_response(
        ConversationFeedResponse(
            items=page.items,  # type: ignore[arg-type]
            total_count=page.total_count,
            next_cursor=next_cursor,
        )
    )


_CURSOR_VERSION = 1
_cursor_decoder = msgspec.json.Decoder(tuple[int, str, str, str, str])


def _encode_cursor(fields: list) -> str:
    return urlsafe.encode(msgspec.json.encode(fields))


def _feed_cursor(raw: str | None, sort_by: str, direction: str) -> tuple[str, str] | None:
    """The (sort key, id) a feed `cursor` continues after. It names its sort, which
    must be the request's: a cursor is a position in one order only."""
    if not raw:
        return None
    if sort_by == "title":
        raise ValidationFailed(
            "Invalid value for 'cursor': cursors page by createdAt or updatedAt",
            errors=[{"field": "cursor", "message": "not with SortBy=title; use PageNumber"}],
        )
    try:
        if len(raw) > 512:
            raise ValueError("too long")
        version, sort, order, key, after_id = _cursor_decoder.decode(urlsafe.decode(raw))
    except (ValueError, msgspec.DecodeError):
        version, sort, order, key, after_id = 0, "", "", "", ""
    if (version, sort, order) != (_CURSOR_VERSION, sort_by, direction) or "\x00" in key + after_id:
        raise ValidationFailed(
            "Invalid value for 'cursor': use the nextCursor of a previous page "
            "with the same SortBy and SortDirection",
            errors=[{"field": "cursor", "message": "not a cursor for this sort"}],
        )
    return key, after_id


async def empty_id(request: Request) -> Response:
    """`/v1/Conversations/` names no conversation: 404, like any other such id."""
    await current_principal(request)
    raise conversation_not_found("")


_create = idempotent(create_conversation, _recover_created, refresh=_renew_websocket_url)

routes = [
    resource("/v1/Conversations", POST=_create),
    resource(
        "/v1/Conversations/",
        POST=_create,
        GET=empty_id,
        PUT=empty_id,
        DELETE=empty_id,
    ),
    resource("/v1/Conversations/feed", GET=conversations_feed),
    resource(
        "/v1/Conversations/{conversation_id}",
        GET=get_conversation,
        PUT=idempotent(update_conversation, current=_conversation_now),
        DELETE=idempotent(delete_conversation),
    ),
]
