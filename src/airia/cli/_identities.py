"""``airia identities add|list|remove|find``: outside threads mapped to conversations."""

from __future__ import annotations

import argparse
import json

from .._client import AiriaClient
from ._output import conversation_table, identities_table, key_option, to_json


def register(groups: argparse._SubParsersAction, common: list[argparse.ArgumentParser]) -> None:
    group = groups.add_parser(
        "identities", help="external identities (e.g. Slack threads)", parents=common
    )
    cmds = group.add_subparsers(dest="command", metavar="ACTION", required=True)

    def triple(p: argparse.ArgumentParser) -> None:
        p.add_argument("--system", required=True, help="e.g. Slack: a letter, then letters/digits")
        p.add_argument("--channel", required=True, help="channel id (1-255 characters)")
        p.add_argument("--thread", required=True, help="thread id (1-255 characters)")

    p = cmds.add_parser("add", help="map an outside thread to a conversation", parents=common)
    p.add_argument("conversation_id", metavar="CONVERSATION_ID")
    triple(p)
    p.set_defaults(handler=_add)

    p = cmds.add_parser("list", help="list a conversation's external identities", parents=common)
    p.add_argument("conversation_id", metavar="CONVERSATION_ID")
    p.set_defaults(handler=_list)

    p = cmds.add_parser("remove", help="remove an external identity", parents=common)
    p.add_argument("conversation_id", metavar="CONVERSATION_ID")
    p.add_argument("identity_id", metavar="IDENTITY_ID")
    key_option(p)
    p.set_defaults(handler=_remove)

    p = cmds.add_parser("find", help="the conversation an outside thread maps to", parents=common)
    triple(p)
    p.set_defaults(handler=_find)


def _add(client: AiriaClient, args: argparse.Namespace) -> str:
    result = client.conversations.add_external_identity(
        args.conversation_id,
        args.system,
        args.channel,
        args.thread,
        correlation_id=args.correlation_id,
    )
    return to_json(result) if args.json else conversation_table(result)


def _list(client: AiriaClient, args: argparse.Namespace) -> str:
    result = client.conversations.list_external_identities(
        args.conversation_id, correlation_id=args.correlation_id
    )
    if args.json:
        return json.dumps([i.model_dump(mode="json", by_alias=True) for i in result], indent=2)
    return identities_table(result)


def _remove(client: AiriaClient, args: argparse.Namespace) -> str:
    client.conversations.remove_external_identity(
        args.conversation_id,
        args.identity_id,
        correlation_id=args.correlation_id,
        idempotency_key=args.idempotency_key,
    )
    return "" if args.json else f"Removed external identity {args.identity_id}"


def _find(client: AiriaClient, args: argparse.Namespace) -> str:
    result = client.conversations.find_conversation_by_external_identity(
        args.system, args.channel, args.thread, correlation_id=args.correlation_id
    )
    return to_json(result) if args.json else conversation_table(result)
