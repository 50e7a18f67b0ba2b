"""The ``airia`` command line: the Conversations API from a shell.

``main`` returns the exit status: 0 on success, 1 when the API call fails,
2 for a usage error (bad option, missing credentials, invalid JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .._client import AiriaClient
from .._exceptions import AiriaAPIError
from .._version import __version__
from . import _attachments, _identities, _messages, _sharing
from ._output import (
    conversation_table,
    error_line,
    feed_table,
    key_option,
    to_json,
    visible,
)

# Tests replace this to send through an httpx.MockTransport.
client_factory: Callable[..., AiriaClient] = AiriaClient


_PARAMETER_OR_QUOTE = re.compile(
    r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|"
    r"\b(api_key|bearer_token|base_url|correlation_id|idempotency_key)\b"
)
_FLAGS = {
    "api_key": "--api-key",
    "bearer_token": "--token",
    "base_url": "--base-url",
    "correlation_id": "--correlation-id",
    "idempotency_key": "--idempotency-key",
}


def _as_flags(message: str) -> str:
    """The SDK's message about an argument it cannot send, naming this command's
    option instead (`bearer_token` is `--token` here); a quoted value is left as it
    is."""
    return _PARAMETER_OR_QUOTE.sub(
        lambda m: _FLAGS[m.group(1)] if m.group(1) else m.group(0), message
    )


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _global_options(defaults: bool) -> argparse.ArgumentParser:
    # Shared by the top parser (with real defaults) and every subcommand (with
    # SUPPRESS), so options work both before and after the command words.
    parser = argparse.ArgumentParser(
        add_help=False, argument_default=None if defaults else argparse.SUPPRESS
    )
    group = parser.add_argument_group("connection")
    group.add_argument("--base-url", help="server URL (env AIRIA_BASE_URL)")
    group.add_argument("--api-key", help="API key (env AIRIA_API_KEY)")
    group.add_argument("--token", help="bearer token, instead of an API key")
    group.add_argument("--correlation-id", help="X-Correlation-ID to send")
    group.add_argument("--json", action="store_true", help="print raw JSON for scripts")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airia",
        description=__doc__.splitlines()[0].replace("``", ""),
        parents=[_global_options(True)],
    )
    parser.add_argument("--version", action="version", version=f"airia {__version__}")
    common = [_global_options(False)]
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    conv = groups.add_parser("conversations", help="manage conversations", parents=common)
    cmds = conv.add_subparsers(dest="command", metavar="ACTION", required=True)

    p = cmds.add_parser("create", help="create a conversation", parents=common)
    p.add_argument("--user-id", required=True)
    p.add_argument("--title")
    p.add_argument("--deployment-id")
    p.add_argument("--bookmark", action="store_true", help="bookmark it")
    p.add_argument("--data-source-files", type=_json_object, metavar="JSON")
    key_option(p)
    p.set_defaults(handler=_create)

    p = cmds.add_parser("get", help="show a conversation and its messages", parents=common)
    p.add_argument("conversation_id", metavar="ID")
    p.set_defaults(handler=_get)

    p = cmds.add_parser("delete", help="delete a conversation permanently", parents=common)
    p.add_argument("conversation_id", metavar="ID")
    key_option(p)
    p.set_defaults(handler=_delete)

    p = cmds.add_parser("update", help="update a conversation", parents=common)
    p.add_argument("conversation_id", metavar="ID")
    p.add_argument("--title", required=True)
    p.add_argument("--bookmark", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--data-source-files", type=_json_object, metavar="JSON")
    p.add_argument("--last-execution-status", metavar="STATUS")
    p.add_argument("--last-execution-id", metavar="ID")
    key_option(p)
    p.set_defaults(handler=_update)

    p = cmds.add_parser("list", help="list conversations, one page", parents=common)
    p.add_argument("--page", type=int, default=1)
    p.add_argument("--page-size", type=int, default=20)
    p.add_argument("--sort-by", choices=["createdAt", "updatedAt", "title"])
    p.add_argument("--sort-direction", choices=["asc", "desc"])
    p.add_argument("--filter", metavar="TEXT")
    p.add_argument("--user-id")
    p.set_defaults(handler=_list)

    _sharing.register(cmds, common)
    _messages.register(groups, common)
    _attachments.register(groups, common)
    _identities.register(groups, common)
    return parser


def _create(client: AiriaClient, args: argparse.Namespace) -> str:
    result = client.conversations.create_conversation(
        user_id=args.user_id,
        title=args.title,
        deployment_id=args.deployment_id,
        data_source_files=args.data_source_files,
        is_bookmarked=args.bookmark,
        correlation_id=args.correlation_id,
        idempotency_key=args.idempotency_key,
    )
    return to_json(result) if args.json else conversation_table(result)


def _get(client: AiriaClient, args: argparse.Namespace) -> str:
    result = client.conversations.get_conversation(
        args.conversation_id, correlation_id=args.correlation_id
    )
    return to_json(result) if args.json else conversation_table(result)


def _delete(client: AiriaClient, args: argparse.Namespace) -> str:
    client.conversations.delete_conversation(
        args.conversation_id,
        correlation_id=args.correlation_id,
        idempotency_key=args.idempotency_key,
    )
    # The server answers 204 with no body, so there is no JSON to print.
    return "" if args.json else f"Deleted conversation {args.conversation_id}"


def _update(client: AiriaClient, args: argparse.Namespace) -> str:
    result = client.conversations.update_conversation(
        args.conversation_id,
        title=args.title,
        data_source_files=args.data_source_files,
        is_bookmarked=args.bookmark,
        last_execution_status=args.last_execution_status,
        last_execution_id=args.last_execution_id,
        correlation_id=args.correlation_id,
        idempotency_key=args.idempotency_key,
    )
    return to_json(result) if args.json else conversation_table(result)


def _list(client: AiriaClient, args: argparse.Namespace) -> str:
    feed = client.conversations.get_conversations_feed(
        page_number=args.page,
        page_size=args.page_size,
        sort_by=args.sort_by,
        sort_direction=args.sort_direction,
        filter=args.filter,
        user_id=args.user_id,
        correlation_id=args.correlation_id,
    )
    return to_json(feed) if args.json else feed_table(feed, args.page)


EXIT_BROKEN_PIPE = 128 + 13
"""What a shell reports for a program its reader stopped reading (SIGPIPE)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    try:
        status = _main(argv)
        sys.stdout.flush()  # here, not at exit, where a closed pipe would go unhandled
        return status
    except BrokenPipeError:
        # The reader went away (`airia messages list ID --all | head -1`): stop quietly,
        # as other command-line tools do, with what is still buffered going nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        client = client_factory(
            base_url=args.base_url, api_key=args.api_key, bearer_token=args.token
        )
    except ValueError as exc:
        print(f"error: {visible(_as_flags(str(exc)))}", file=sys.stderr)
        return 2
    with client:
        try:
            output = args.handler(client, args)
        except AiriaAPIError as exc:
            print(error_line(exc), file=sys.stderr)
            return 1
        except _attachments.CommandError as exc:
            print(f"error: {visible(str(exc))}", file=sys.stderr)
            return exc.status
        except ValueError as exc:  # an argument the SDK cannot send (a header value)
            print(f"error: {visible(_as_flags(str(exc)))}", file=sys.stderr)
            return 2
        except BrokenPipeError:
            raise
        except OSError as exc:  # a local file: the path to upload, or where to save
            print(f"error: {visible(str(exc))}", file=sys.stderr)
            return 1
    if output:
        print(output)
    return 0
