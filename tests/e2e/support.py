"""Helpers for the end-to-end tests: the server process, the CLI, tokens, problem checks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt
import pytest

import backends

BOOTSTRAP_KEY = "e2e-bootstrap-key-" + "k" * 32
JWT_SECRET = "e2e-jwt-secret-" + "s" * 40
STARTUP_SECONDS = 20.0
SHUTDOWN_SECONDS = 15.0
CLI_SECONDS = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**overrides: str) -> dict[str, str]:
    """The test process's environment without any AIRIA_* setting, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRIA_")}
    env.update(overrides)
    return env


def server_command(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "airia-server"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "airia_server", *args]


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        server_command(*args),
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_SECONDS,
        check=False,
    )


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it does not exit within a bound."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=SHUTDOWN_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=SHUTDOWN_SECONDS)


def mint_jwt(
    sub: str,
    tenant: str = "default",
    *,
    ttl: int = 3600,
    secret: str = JWT_SECRET,
    algorithm: str = "HS256",
    **extra: object,
) -> str:
    claims = {"sub": sub, "tenant": tenant, "exp": int(time.time()) + ttl, **extra}
    return jwt.encode(claims, secret, algorithm=algorithm)


@dataclass
class LiveServer:
    base_url: str
    """`http://127.0.0.1:PORT` (no trailing slash)."""
    api_key: str
    env: dict[str, str]
    db_path: Path
    stderr_path: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    @property
    def ws_base_url(self) -> str:
        return "ws" + self.base_url.removeprefix("http")

    def headers(self, api_key: str | None = None) -> dict[str, str]:
        return {"X-API-KEY": api_key or self.api_key}

    def bearer(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def mint_token(self, sub: str, tenant: str = "default", **kwargs) -> str:
        return mint_jwt(sub, tenant, **kwargs)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `airia-server ARGS` against this server's database."""
        return run_cli(self.env, *args)

    def create_api_key(self, tenant: str, name: str | None = None) -> str:
        args = ["keys", "create", "--tenant", tenant]
        if name:
            args += ["--name", name]
        result = self.cli(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10.0, **kwargs)

    def wait_healthy(self) -> None:
        wait_healthy(self.process, self.base_url, self.stderr_path)


def start_server(
    root: Path,
    *,
    database_url: str | None = None,
    name: str = "server",
    wait: bool = True,
    workers: int = 1,
    host: str = "127.0.0.1",
    **env: str | None,
) -> LiveServer:
    """A real `airia-server serve` on a free port of 127.0.0.1 (listening on `host`: give
    "0.0.0.0" to have links built from the request's Host); the one way tests start one.

    Its settings: `database_url`, or a fresh SQLite database `root`/a.db; blobs under
    `root`/blobs; the bootstrap key and the JWT secret; text logs; then `env` on top (a value
    of None leaves that setting out). Its stderr is appended to `root`/`name`.stderr, so a
    server restarted over the same root keeps one log. Healthy on return, unless `wait` is
    false (several instances started at once): then call `.wait_healthy()` before use.
    `workers` > 1 serves with that many worker processes (`serve --workers`).
    Stop it with `stop_process(server.process)`, or use `running_server`.
    """
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    settings: dict[str, str | None] = {
        "AIRIA_DATABASE_URL": database_url or f"sqlite:///{root / 'a.db'}",
        "AIRIA_BLOB_DIR": str(root / "blobs"),
        "AIRIA_BOOTSTRAP_API_KEY": BOOTSTRAP_KEY,
        "AIRIA_JWT_SECRET": JWT_SECRET,
        "AIRIA_LOG_FORMAT": "text",
        **env,
    }
    server_env = clean_env(**{k: v for k, v in settings.items() if v is not None})
    stderr_path = root / f"{name}.stderr"
    with open(stderr_path, "ab") as stderr:
        proc = subprocess.Popen(
            server_command("serve", "--host", host, "--port", str(port), "--workers", str(workers)),
            env=server_env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    server = LiveServer(
        base_url=f"http://127.0.0.1:{port}",
        api_key=BOOTSTRAP_KEY,
        env=server_env,
        db_path=root / "a.db",
        stderr_path=stderr_path,
        process=proc,
    )
    if wait:
        try:
            server.wait_healthy()
        except BaseException:
            stop_process(proc)
            raise
    return server


@contextmanager
def server_on(backend: str, root: Path, **settings: str | None) -> Iterator[LiveServer]:
    """A running server on `backend`: "sqlite" (a database under `root`), or
    "postgres+redis" (a PostgreSQL database of its own, dropped once the server has
    stopped, and the shared Redis); `settings` on top."""
    database_url = None
    if backend == "postgres+redis":
        backends.require(backends.postgres_problem())
        backends.require(backends.redis_problem())
        database_url = backends.create_database_sync()
        settings = {"AIRIA_REDIS_URL": backends.REDIS_URL, **settings}
    try:
        with running_server(root, database_url=database_url, **settings) as server:
            yield server
    finally:
        if database_url is not None:
            backends.drop_database_sync(database_url)


@contextmanager
def running_server(root: Path, **kwargs) -> Iterator[LiveServer]:
    """`start_server(root, **kwargs)`, stopped (SIGTERM, then SIGKILL) on the way out."""
    server = start_server(root, **kwargs)
    try:
        yield server
    finally:
        stop_process(server.process)


def wait_healthy(proc: subprocess.Popen, base_url: str, stderr_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    last_error: Exception | None = None
    with httpx.Client(timeout=1.0) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(
                    f"airia-server exited with {proc.returncode} before it was healthy:\n"
                    + stderr_path.read_text(errors="replace")
                )
            try:
                if http.get(f"{base_url}/healthz").status_code == 200:
                    return
            except httpx.TransportError as exc:
                last_error = exc
            time.sleep(0.05)
    stop_process(proc)
    pytest.fail(
        f"airia-server was not healthy within {STARTUP_SECONDS}s ({last_error!r}):\n"
        + stderr_path.read_text(errors="replace")
    )


def assert_problem(response: httpx.Response, status: int) -> dict:
    """The response is an RFC 9457 problem with `status` and the members clients read."""
    assert response.status_code == status, response.text
    media = response.headers["content-type"].split(";")[0].strip()
    assert media == "application/problem+json", response.headers["content-type"]
    body = response.json()
    assert body["status"] == status
    assert body["type"] == "about:blank", body  # RFC 9457 4.2.1; the contract's example has it
    for member in ("message", "title", "detail"):
        assert isinstance(body[member], str) and body[member], (member, body)
    return body


async def all_messages(http: httpx.AsyncClient, conversation_id: str) -> list[dict]:
    """Every message of a conversation, oldest first, read page by page by cursor."""
    messages: list[dict] = []
    cursor = None
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        response = await http.get(f"/v1/Conversations/{conversation_id}/messages", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        messages += page["items"]
        if not (cursor := page["nextCursor"]):
            return messages
