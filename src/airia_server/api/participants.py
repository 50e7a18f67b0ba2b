"""Routes for sharing, and for the live signals (typing, presence) and socket URLs."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from airia_server.api.bodies import read_json
from airia_server.api.common import json_response
from airia_server.api.deps import current_principal, services, websocket_url_and_expiry
from airia_server.api.idempotency import idempotent
from airia_server.api.schemas import (
    Participant,
    PresenceRequest,
    PresenceResponse,
    RoleRequest,
    ShareRequest,
    TypingRequest,
    TypingResponse,
    WebSocketUrlResponse,
)
from airia_server.storage.base import ParticipantRecord

_share_decoder = msgspec.json.Decoder(ShareRequest)
_role_decoder = msgspec.json.Decoder(RoleRequest)
_typing_decoder = msgspec.json.Decoder(TypingRequest)
_presence_decoder = msgspec.json.Decoder(PresenceRequest)


def participant_view(p: ParticipantRecord) -> Participant:
    # No user directory here: the user id is the only name there is.
    return Participant(
        id=p.id,
        conversation_id=p.conversation_id,
        user_id=p.user_id,
        username=p.user_id,
        role=p.role,
        shared_at=p.shared_at,
        shared_by_user_id=p.shared_by_user_id,
        shared_by_username=p.shared_by_user_id,
    )


async def share(request: Request) -> Response:
    principal = await current_principal(request)
    svc = services(request)
    body = await read_json(request, _share_decoder, svc.settings.max_body_bytes)
    participant = await svc.participants.share(
        principal, request.path_params["conversation_id"], body.user_id, body.role
    )
    return json_response(participant_view(participant))


async def list_participants(request: Request) -> Response:
    principal = await current_principal(request)
    found = await services(request).participants.list(
        principal, request.path_params["conversation_id"]
    )
    return json_response([participant_view(p) for p in found])


async def change_role(request: Request) -> Response:
    principal = await current_principal(request)
    svc = services(request)
    body = await read_json(request, _role_decoder, svc.settings.max_body_bytes)
    participant = await svc.participants.share(
        principal,
        request.path_params["conversation_id"],
        request.path_params["user_id"],
        body.role,
        only_existing=True,
    )
    return json_response(participant_view(participant))


async def remove_participant(request: Request) -> Response:
    principal = await current_principal(request)
    participant = await services(request).participants.remove(
        principal, request.path_params["conversation_id"], request.path_params["user_id"]
    )
    return json_response(participant_view(participant))


async def typing(request: Request) -> Response:
    principal = await current_principal(request)
    svc = services(request)
    body = await read_json(request, _typing_decoder, svc.settings.max_body_bytes)
    conversation_id, actor = await svc.conversations.signal(
        principal,
        request.path_params["conversation_id"],
        "typing",
        body.user_id,
        {"isTyping": body.is_typing},
    )
    return json_response(
        TypingResponse(conversation_id=conversation_id, user_id=actor, is_typing=body.is_typing)
    )


async def presence(request: Request) -> Response:
    principal = await current_principal(request)
    svc = services(request)
    body = await read_json(request, _presence_decoder, svc.settings.max_body_bytes)
    conversation_id, actor = await svc.conversations.signal(
        principal,
        request.path_params["conversation_id"],
        "presence",
        body.user_id,
        {"action": body.action},
    )
    return json_response(
        PresenceResponse(conversation_id=conversation_id, user_id=actor, action=body.action)
    )


async def websocket_url(request: Request) -> Response:
    principal = await current_principal(request)
    record = await services(request).conversations.get(
        principal, request.path_params["conversation_id"]
    )
    url, expires = websocket_url_and_expiry(request, principal, record.id)
    return json_response(
        WebSocketUrlResponse(
            websocket_url=url, expires_at=expires, last_sequence=record.last_sequence
        )
    )


_BASE = "/v1/Conversations/{conversation_id}"
routes = [
    Route(f"{_BASE}/share", share, methods=["POST"]),
    Route(f"{_BASE}/participants", list_participants, methods=["GET"]),
    Route(f"{_BASE}/participants/{{user_id}}/role", idempotent(change_role), methods=["PUT"]),
    Route(f"{_BASE}/participants/{{user_id}}", idempotent(remove_participant), methods=["DELETE"]),
    Route(f"{_BASE}/typing", typing, methods=["POST"]),
    Route(f"{_BASE}/presence", presence, methods=["POST"]),
    Route(f"{_BASE}/websocket-url", websocket_url, methods=["GET"]),
]
