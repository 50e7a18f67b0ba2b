"""Every Python example in the documentation runs against a real server.

Collected: each ```python (or ```py) fenced block of docs/*.md and README.md.
A block that is deliberately not runnable (a fragment, output, another
language in a python fence) is marked in the Markdown by an HTML comment on
the nearest non-blank line before its fence:

    <!-- not-run: why -->

Marked blocks are reported as skipped with their reason; the inventory test
prints how many blocks run and how many are marked. Every other block runs as
its own `python` process, in an empty temporary directory, with
AIRIA_BASE_URL and AIRIA_API_KEY set to the session's server, and must exit 0.

The only changes made to a block before it runs (keep this list short):

1. Placeholders: "your_api_key" becomes the server's key, "your_bearer_token"
   a JWT for user_123, and http://localhost:8000 / http://127.0.0.1:8000 the
   server's URL.
2. "your_conversation_id" becomes a conversation the harness creates for the
   block (owner user_123, with two messages); "your_message_id" the id of the
   last of those messages.
3. A block that uses `client` without binding it runs after
   `client = AiriaClient()` (`AiriaAsyncClient()` when the block awaits): the
   client the SDK page's Configuration section creates, configured here by the
   environment.
4. Top-level `await` / `async with` / `async for` run as in `python -m asyncio`.
5. The working directory holds small files named report.pdf and photo.jpg.
6. A block that watches events (`.events(`) gets messages added to its
   conversation until it prints a line; then the conversation is deleted,
   which ends the stream (close 1000) and so the block.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .support import LiveServer, clean_env, mint_jwt

ROOT = Path(__file__).resolve().parents[2]
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
PYTHON_INFO = {"python", "py"}
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(?P<reason>.*?)\s*-->$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^\s`]*)")
BLOCK_SECONDS = 60
USER = "user_123"
FILES = {"report.pdf": b"%PDF-1.4\n% a tiny report\n%%EOF\n", "photo.jpg": b"\xff\xd8\xff\xe0JFIF"}

RUNNER = """\
import ast, asyncio, inspect, sys
path = sys.argv[1]
code = compile(open(path).read(), path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
namespace = {"__name__": "__main__"}
if code.co_flags & inspect.CO_COROUTINE:
    asyncio.run(eval(code, namespace))
else:
    exec(code, namespace)
"""


@dataclass(frozen=True)
class Example:
    page: str
    line: int
    code: str
    not_run: str | None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def collect(path: Path) -> list[Example]:
    """The python blocks of one Markdown file, with their not-run reasons."""
    examples: list[Example] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    page = str(path.relative_to(ROOT))
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i])
            i += 1
        i += 1
        if opening["info"].lower() not in PYTHON_INFO:
            continue
        before = next((line.strip() for line in reversed(lines[:start]) if line.strip()), "")
        marker = NOT_RUN.match(before)
        examples.append(
            Example(page, start + 1, "\n".join(body) + "\n", marker["reason"] if marker else None)
        )
    return examples


EXAMPLES = [example for page in PAGES if page.exists() for example in collect(page)]
RUNNABLE = [e for e in EXAMPLES if e.not_run is None]
MARKED = [e for e in EXAMPLES if e.not_run is not None]


def is_async(code: str) -> bool:
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    return bool(compile(code, "<example>", "exec", flags=flags).co_flags & inspect.CO_COROUTINE)


def binds_client(code: str) -> bool:
    return bool(re.search(r"^\s*client\s*=|\bas\s+client\b", code, re.MULTILINE))


def prepare(example: Example, server: LiveServer, conversation: dict[str, str]) -> str:
    """The block with the substitutions of the module docstring applied."""
    code = example.code
    for url in ("http://localhost:8000", "http://127.0.0.1:8000"):
        code = code.replace(url, server.base_url)
    code = code.replace('"your_api_key"', repr(server.api_key))
    code = code.replace('"your_bearer_token"', repr(mint_jwt(USER)))
    code = code.replace('"your_conversation_id"', repr(conversation["id"]))
    code = code.replace('"your_message_id"', repr(conversation["message_id"]))
    if re.search(r"\bclient\.", code) and not binds_client(code):
        kind = "AiriaAsyncClient" if is_async(code) else "AiriaClient"
        code = f"from airia import {kind}\nclient = {kind}()\n" + code
    return code


def create_conversation(http: httpx.Client) -> dict[str, str]:
    created = http.post("/v1/Conversations", json={"userId": USER, "title": "Docs example"})
    assert created.status_code == 201, created.text
    conversation_id = created.json()["conversationId"]
    message_id = ""
    for text, role in (("Hello!", "user"), ("Hi, how can I help?", "assistant")):
        message_id = add_message(http, conversation_id, text, role)
    return {"id": conversation_id, "message_id": message_id}


def add_message(http: httpx.Client, conversation_id: str, text: str, role: str = "user") -> str:
    added = http.post(
        f"/v1/Conversations/{conversation_id}/messages",
        json={"message": text, "role": role, "userId": USER},
    )
    assert added.status_code == 201, added.text
    return added.json()["messageId"]


def drive_events(proc: subprocess.Popen, out: list[str], http: httpx.Client, cid: str) -> None:
    """Rule 6: add messages until the watching block prints, then delete the conversation."""
    deadline = time.monotonic() + BLOCK_SECONDS / 2
    while not out and proc.poll() is None and time.monotonic() < deadline:
        add_message(http, cid, "Hello from the docs test")
        time.sleep(0.3)
    http.delete(f"/v1/Conversations/{cid}")


@pytest.mark.e2e
@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_example_runs(example: Example, server: LiveServer, tmp_path: Path) -> None:
    if example.not_run is not None:
        pytest.skip(f"SKIPPED DOC EXAMPLE, marked not-run: {example.not_run}")
    for name, content in FILES.items():
        (tmp_path / name).write_bytes(content)
    with httpx.Client(base_url=server.base_url, headers=server.headers(), timeout=10) as http:
        conversation = create_conversation(http)
        script = tmp_path / "example.py"
        script.write_text(prepare(example, server, conversation), encoding="utf-8")
        env = clean_env(
            AIRIA_BASE_URL=server.base_url, AIRIA_API_KEY=server.api_key, PYTHONUNBUFFERED="1"
        )
        out: list[str] = []
        err: list[str] = []
        with subprocess.Popen(
            [sys.executable, "-c", RUNNER, str(script)],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            readers = [
                threading.Thread(target=out.extend, args=(proc.stdout,), daemon=True),
                threading.Thread(target=err.extend, args=(proc.stderr,), daemon=True),
            ]
            for reader in readers:
                reader.start()
            try:
                if ".events(" in example.code:
                    drive_events(proc, out, http, conversation["id"])
                proc.wait(timeout=BLOCK_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            finally:
                for reader in readers:
                    reader.join(timeout=5)
    assert proc.returncode == 0, (
        f"{example.id} exited with {proc.returncode}\n--- code\n{script.read_text()}"
        f"\n--- stdout\n{''.join(out)}\n--- stderr\n{''.join(err)}"
    )


def test_inventory(capsys: pytest.CaptureFixture[str]) -> None:
    """Print how many examples run and how many are marked; every mark gives a reason."""
    assert RUNNABLE, "no runnable python example found in the docs"
    for example in MARKED:
        assert example.not_run, f"{example.id}: a not-run marker needs a reason"
    lines = [f"docs examples: {len(RUNNABLE)} run, {len(MARKED)} marked not-run"]
    lines += [f"  not-run {e.id}: {e.not_run}" for e in MARKED]
    with capsys.disabled():
        print("\n" + "\n".join(lines))


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs/gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_http_reference_covers_every_operation() -> None:
    from airia_server.api.openapi import openapi_document

    document = openapi_document()
    page = load_generator().render_http_reference(document)
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            assert f"`{method.upper()} {path}`" in page
            assert f"Operation id: `{op['operationId']}`" in page
            for status in op["responses"]:
                assert f"| {status} |" in page, (method, path, status)
    for name in document["components"]["schemas"]:
        assert f"### {name} {{#schema-{name}}}" in page


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="docs tools not installed")
def test_site_builds_strict(tmp_path: Path) -> None:
    """`make docs` in miniature: the site builds with warnings as errors."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env=clean_env(NO_MKDOCS_2_WARNING="1"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "reference/http/index.html").exists()
    assert (tmp_path / "reference/sdk/index.html").exists()
