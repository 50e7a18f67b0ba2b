"""``airia conversations share|participants|mark-read|watch``."""

from __future__ import annotations

import argparse
import json

from .._client import AiriaClient
from ._output import conversation_table, event_line, participants_table, to_json, to_json_line

ROLES = ["Owner", "Collaborator", "Viewer"]


def register(cmds: argparse._SubParsersAction, common: list[argparse.ArgumentParser]) -> None:
    p = cmds.add_parser("share", help="share a conversation with a user", parents=common)
    p.add_argument("conversation_id", metavar="ID")
    p.add_argument("--user-id", required=True)
    p.add_argument("--role", choices=ROLES, default="Viewer")
    p.set_defaults(handler=_share)

    p = cmds.add_parser("participants", help="list who has access", parents=common)
    p.add_argument("conversation_id", metavar="ID")
    p.set_defaults(handler=_participants)

    p = cmds.add_parser("mark-read", help="mark every message as read", parents=common)
    p.add_argument("conversation_id", metavar="ID")
    p.add_argument("--user-id", help="whose read position (with an API key)")
    p.set_defaults(handler=_mark_read)

    p = cmds.add_parser("watch", help="print events as they happen (Ctrl-C stops)", parents=common)
    p.add_argument("conversation_id", metavar="ID")
    p.add_argument("--after", type=int, metavar="N", help="replay stored events after sequence N")
    p.set_defaults(handler=_watch)


def _share(client: AiriaClient, args: argparse.Namespace) -> str:
    result = client.conversations.share_conversation(
        args.conversation_id, args.user_id, role=args.role, correlation_id=args.correlation_id
    )
    return to_json(result) if args.json else conversation_table(result)


def _participants(client: AiriaClient, args: argparse.Namespace) -> str:
    result = client.conversations.list_participants(
        args.conversation_id, correlation_id=args.correlation_id
    )
    if args.json:
        return json.dumps([p.model_dump(mode="json", by_alias=True) for p in result], indent=2)
    return participants_table(result)


def _mark_read(client: AiriaClient, args: argparse.Namespace) -> str:
    result = client.conversations.mark_as_read(
        args.conversation_id, user_id=args.user_id, correlation_id=args.correlation_id
    )
    return to_json(result) if args.json else conversation_table(result)


def _watch(client: AiriaClient, args: argparse.Namespace) -> str:
    stream = client.conversations.events(args.conversation_id, after=args.after)
    try:
        for event in stream:
            print(to_json_line(event) if args.json else event_line(event), flush=True)
    except KeyboardInterrupt:  # the way to stop watching; not an error
        pass
    finally:
        stream.close()
    return ""
