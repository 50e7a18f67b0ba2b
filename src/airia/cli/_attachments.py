"""``airia attachments upload|list|download``."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from .._client import AiriaClient
from .._files import CHUNK_SIZE, fit_file_name, save
from ._output import attachments_table, conversation_table, human_size, key_option, to_json, visible


class CommandError(Exception):
    """A command that cannot go on, with its exit status (2: usage, 1: failure)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def register(groups: argparse._SubParsersAction, common: list[argparse.ArgumentParser]) -> None:
    group = groups.add_parser("attachments", help="files of a conversation", parents=common)
    cmds = group.add_subparsers(dest="command", metavar="ACTION", required=True)

    p = cmds.add_parser("upload", help="upload a file (streamed)", parents=common)
    p.add_argument("conversation_id", metavar="CONVERSATION_ID")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--source", choices=["user", "agent"], default="agent")
    p.add_argument("--content-type", metavar="TYPE", help="default: guessed from the name")
    key_option(p)
    p.set_defaults(handler=_upload)

    p = cmds.add_parser("list", help="list a conversation's attachments", parents=common)
    p.add_argument("conversation_id", metavar="CONVERSATION_ID")
    p.set_defaults(handler=_list)

    p = cmds.add_parser("download", help="download by signed URL or blob id", parents=common)
    p.add_argument("target", metavar="URL_OR_BLOB_ID")
    p.add_argument("--conversation", metavar="ID", help="the conversation, with a blob id")
    p.add_argument(
        "-o", "--output", metavar="PATH", help="where to write ('-' for stdout); default: its name"
    )
    p.set_defaults(handler=_download)


def _stderr_is_tty() -> bool:
    return sys.stderr.isatty()


class ProgressReader:
    """A file whose reads draw ``[#####-----]  50%  1.0 MiB / 2.0 MiB`` on a terminal.

    Everything but ``read`` goes to the wrapped file, so the SDK still sees
    its size (``fileno``, ``tell``) and sends a Content-Length.
    """

    WIDTH = 30

    def __init__(self, file: IO[bytes], total: int, out: IO[str]) -> None:
        self._file = file
        self._total = total
        self._out = out
        self._done = 0
        self._drawn = -1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self._done += len(data)
        self._draw()
        return data

    def _draw(self) -> None:
        percent = 100 if self._total == 0 else min(100, self._done * 100 // self._total)
        if percent == self._drawn:
            return
        self._drawn = percent
        filled = self.WIDTH * percent // 100
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        sizes = f"{human_size(self._done)} / {human_size(self._total)}"
        self._out.write(f"\r[{bar}] {percent:3d}%  {sizes}")
        self._out.flush()

    def finish(self) -> None:
        if self._drawn >= 0:
            self._out.write("\n")
            self._out.flush()


def _upload(client: AiriaClient, args: argparse.Namespace) -> str:
    path = Path(args.path)
    with open(path, "rb") as file:
        source: Any = file
        progress = None
        if _stderr_is_tty():
            source = progress = ProgressReader(file, os.fstat(file.fileno()).st_size, sys.stderr)
        try:
            result = client.conversations.upload_attachment(
                args.conversation_id,
                source,
                file_name=path.name,
                content_type=args.content_type,
                source=args.source,
                correlation_id=args.correlation_id,
                idempotency_key=args.idempotency_key,
            )
        finally:
            if progress is not None:
                progress.finish()
    return to_json(result) if args.json else conversation_table(result)


def _list(client: AiriaClient, args: argparse.Namespace) -> str:
    result = client.conversations.list_attachments(
        args.conversation_id, correlation_id=args.correlation_id
    )
    if args.json:
        return json.dumps([a.model_dump(mode="json", by_alias=True) for a in result], indent=2)
    return attachments_table(result)


def _safe_name(name: str | None) -> str | None:
    # A name from the server or a URL must not pick the directory it lands in, nor
    # be longer than the file system takes (stored names may be).
    base = os.path.basename((name or "").replace("\\", "/"))
    return fit_file_name(base) if base not in ("", ".", "..") else None


def _disposition_name(value: str | None) -> str | None:
    """The file name a Content-Disposition gives: `filename*` (RFC 6266, UTF-8) first,
    else `filename`; None without one."""
    if not value:
        return None
    encoded = re.search(r"filename\*\s*=\s*UTF-8''([^;]+)", value, re.IGNORECASE)
    if encoded:
        return unquote(encoded.group(1).strip())
    plain = re.search(r'filename\s*=\s*"([^"]*)"|filename\s*=\s*([^;]+)', value, re.IGNORECASE)
    if plain:
        return (plain.group(1) if plain.group(1) is not None else plain.group(2)).strip()
    return None


def _download_named(client: AiriaClient, url: str, correlation_id: str | None) -> tuple[str, int]:
    """A signed URL without -o: saved under the name the server gives the file (its
    Content-Disposition), not the URL's last segment (`content` for every file)."""
    request = client._build_download_request(url, correlation_id)
    with client._stream(request) as response:
        name = _safe_name(_disposition_name(response.headers.get("content-disposition")))
        if name is None:
            name = _safe_name(unquote(urlsplit(url).path))
        if name is None:
            raise CommandError("cannot tell a file name from the download; pass -o PATH", status=2)
        return name, save(response.iter_bytes(CHUNK_SIZE), name)


def _download(client: AiriaClient, args: argparse.Namespace) -> str:
    target: Any = args.target
    default_name = None
    if ("://" in args.target or args.target.startswith("/")) and args.output is None:
        output, size = _download_named(client, args.target, args.correlation_id)
        if args.json:
            return json.dumps({"path": output, "size": size})
        return f"Saved {human_size(size)} to {visible(str(output))}"
    if "://" in args.target or args.target.startswith("/"):
        default_name = _safe_name(unquote(urlsplit(args.target).path))
    else:
        if not args.conversation:
            raise CommandError("a blob id needs --conversation ID (or pass its URL)", status=2)
        attachments = client.conversations.list_attachments(
            args.conversation, correlation_id=args.correlation_id
        )
        target = next((a for a in attachments if a.blob_id == args.target), None)
        if target is None:
            raise CommandError(f"no attachment {args.target} in conversation {args.conversation}")
        default_name = _safe_name(target.file_name) or _safe_name(target.blob_id)
    if args.output == "-":
        client.conversations.download_attachment(
            target, sys.stdout.buffer, correlation_id=args.correlation_id
        )
        sys.stdout.buffer.flush()
        return ""
    output = args.output or default_name
    if output is None:
        raise CommandError("cannot tell a file name from the URL; pass -o PATH", status=2)
    size = client.conversations.download_attachment(
        target, output, correlation_id=args.correlation_id
    )
    if args.json:
        return json.dumps({"path": str(output), "size": size})
    return f"Saved {human_size(size)} to {visible(str(output))}"
