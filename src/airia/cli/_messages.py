"""``airia messages add|list|truncate``."""

from __future__ import annotations

import argparse

from .._client import AiriaClient
from ..types.api.conversations import MessagePage
from ._output import conversation_table, key_option, messages_table, to_json


def register(groups: argparse._SubParsersAction, common: list[argparse.ArgumentParser]) -> None:
    group = groups.add_parser("messages", help="messages of a conversation", parents=common)
    cmds = group.add_subparsers(dest="command", metavar="ACTION", required=True)

    p = cmds.add_parser("add", help="add a message", parents=common)
    p.add_argument("conversation_id", metavar="ID")
    p.add_argument("--message", required=True, metavar="TEXT")
    p.add_argument("--role", choices=["user", "assistant", "system"], default="user")
    p.add_argument("--user-id", help="the user it is from (with an API key)")
    p.add_argument("--image", action="append", metavar="URL", help="image URL (repeatable)")
    key_option(p)
    p.set_defaults(handler=_add)

    p = cmds.add_parser("list", help="list messages, one page or --all", parents=common)
    p.add_argument("conversation_id", metavar="ID")
    p.add_argument("--limit", type=int, help="messages per page")
    p.add_argument("--order", choices=["asc", "desc"])
    p.add_argument("--cursor", help="next cursor printed by the previous page")
    p.add_argument("--all", action="store_true", help="every message, following cursors")
    p.set_defaults(handler=_list)

    p = cmds.add_parser(
        "truncate", help="delete a message and every message after it", parents=common
    )
    p.add_argument("conversation_id", metavar="ID")
    p.add_argument("message_id", metavar="MESSAGE_ID")
    key_option(p)
    p.set_defaults(handler=_truncate)


def _add(client: AiriaClient, args: argparse.Namespace) -> str:
    result = client.conversations.add_message(
        args.conversation_id,
        args.message,
        role=args.role,
        images=args.image,
        user_id=args.user_id,
        correlation_id=args.correlation_id,
        idempotency_key=args.idempotency_key,
    )
    return to_json(result) if args.json else conversation_table(result)


def _list(client: AiriaClient, args: argparse.Namespace) -> str:
    if args.all:
        items = list(
            client.conversations.iter_messages(
                args.conversation_id, order=args.order or "asc", page_size=args.limit or 100
            )
        )
        page = MessagePage(items=items, next_cursor=None)
    else:
        page = client.conversations.list_messages(
            args.conversation_id,
            limit=args.limit,
            order=args.order,
            cursor=args.cursor,
            correlation_id=args.correlation_id,
        )
    if args.json:
        return to_json(page)
    return messages_table(page.items, page.next_cursor, args.order)


def _truncate(client: AiriaClient, args: argparse.Namespace) -> str:
    result = client.conversations.truncate_messages(
        args.conversation_id,
        args.message_id,
        correlation_id=args.correlation_id,
        idempotency_key=args.idempotency_key,
    )
    return to_json(result) if args.json else conversation_table(result)
