"""Roles and what each may do.

A bearer user's role in a conversation is their participant row's; a
conversation they take no part in does not exist for them (404). An API key
acts for any user of its tenant, with every right.
"""

from __future__ import annotations

from typing import Literal

from airia_server.domain.auth import Principal
from airia_server.errors import Forbidden, conversation_not_found
from airia_server.ids import parse_id
from airia_server.storage.base import ConversationRecord, Store

Role = Literal["Owner", "Collaborator", "Viewer"]
ROLES: tuple[Role, ...] = ("Owner", "Collaborator", "Viewer")
_RANK = {"Viewer": 1, "Collaborator": 2, "Owner": 3}

VIEW: Role = "Viewer"
WRITE: Role = "Collaborator"
MANAGE: Role = "Owner"

_ACTIONS = {VIEW: "read", WRITE: "write to", MANAGE: "manage"}


def role_allows(role: str | None, needed: Role) -> bool:
    return role is not None and _RANK.get(role, 0) >= _RANK[needed]


async def load(
    store: Store, principal: Principal, conversation_id: str, needed: Role = VIEW
) -> tuple[ConversationRecord, Role]:
    """The conversation and the caller's role in it, if they have at least `needed`.

    Not visible at all: 404, whatever the id's shape. Visible but not enough: 403.
    """
    canonical = parse_id(conversation_id)
    if canonical is None:
        raise conversation_not_found(conversation_id)
    if principal.is_api_key:
        record = await store.get_conversation(principal.tenant_id, canonical)
        if record is None:
            raise conversation_not_found(conversation_id)
        return record, "Owner"
    found = await store.get_conversation_for(principal.tenant_id, canonical, principal.user_id)
    if found is None or found[1] is None:
        raise conversation_not_found(conversation_id)
    record, role = found
    if not role_allows(role, needed):
        raise Forbidden(
            f"A {role} cannot {_ACTIONS[needed]} this conversation",
            f"This needs the role {needed} or higher; you are {role}",
        )
    return record, role  # type: ignore[return-value]


def acting_user(principal: Principal, requested: str | None, default: str | None) -> str | None:
    """Whom an action is by: a bearer user is always themselves; an API key names
    the user (`requested`) or falls back to `default`."""
    if not principal.is_api_key:
        if requested is not None and requested != principal.user_id:
            raise Forbidden(
                "Cannot act as another user",
                f"A bearer token for '{principal.user_id}' cannot act as '{requested}'",
            )
        return principal.user_id
    return requested if requested is not None else default
