"""Routes for external identities (a chat thread mapped to a conversation)."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from airia_server.api.bodies import field_of, read_json, validation_text
from airia_server.api.common import json_response, query_params, resource
from airia_server.api.conversations import conversation_view, shown_messages
from airia_server.api.deps import current_principal, services
from airia_server.api.idempotency import idempotent
from airia_server.api.schemas import ExternalIdentity, ExternalIdentityRequest
from airia_server.errors import ValidationFailed
from airia_server.storage.base import IdentityRecord

_decoder = msgspec.json.Decoder(ExternalIdentityRequest)


def identity_view(record: IdentityRecord) -> ExternalIdentity:
    return ExternalIdentity(
        id=record.id,
        conversation_id=record.conversation_id,
        external_system=record.external_system,
        external_channel_id=record.external_channel_id,
        external_thread_id=record.external_thread_id,
        created_at=record.created_at,
    )


async def list_identities(request: Request) -> Response:
    principal = await current_principal(request)
    found = await services(request).identities.list(
        principal, request.path_params["conversation_id"]
    )
    return json_response([identity_view(r) for r in found])


async def add_identity(request: Request) -> Response:
    principal = await current_principal(request)
    svc = services(request)
    body = await read_json(request, _decoder, svc.settings.max_body_bytes)
    record = await svc.identities.add(
        principal,
        request.path_params["conversation_id"],
        body.external_system,
        body.external_channel_id,
        body.external_thread_id,
    )
    return json_response(identity_view(record), status=201)


async def remove_identity(request: Request) -> Response:
    principal = await current_principal(request)
    await services(request).identities.remove(
        principal, request.path_params["conversation_id"], request.path_params["identity_id"]
    )
    return Response(status_code=204)


def _lookup_query(request: Request) -> ExternalIdentityRequest:
    params = query_params(request)
    raw = {
        "externalSystem": params.get("externalsystem"),
        "externalChannelId": params.get("externalchannelid"),
        "externalThreadId": params.get("externalthreadid"),
    }
    try:
        return msgspec.convert(
            {k: v for k, v in raw.items() if v is not None}, ExternalIdentityRequest
        )
    except msgspec.ValidationError as exc:
        text = validation_text(exc)
        raise ValidationFailed(
            f"Invalid look-up: {text}", text, errors=[{"field": field_of(text), "message": text}]
        ) from None


async def find_by_identity(request: Request) -> Response:
    """Extension: the conversation a chat thread is mapped to."""
    principal = await current_principal(request)
    query = _lookup_query(request)
    svc = services(request)
    record = await svc.identities.find(
        principal, query.external_system, query.external_channel_id, query.external_thread_id
    )
    messages = await shown_messages(svc, record)
    return json_response(conversation_view(request, principal, record, messages))


_BASE = "/v1/Conversations/{conversation_id}/external-identities"
routes = [
    Route("/v1/Conversations/external-identities/lookup", find_by_identity, methods=["GET"]),
    resource(_BASE, GET=list_identities, POST=add_identity),
    Route(f"{_BASE}/{{identity_id}}", idempotent(remove_identity), methods=["DELETE"]),
]
