"""An HTTP scope as uvicorn hands one to the application, for tests that call it
directly (no server, no sockets)."""

from __future__ import annotations


def http_scope(method: str, path: str, query: bytes = b"") -> dict:
    """With the bootstrap key `key` and a Host, as a client would send them."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"x-api-key", b"key")],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "state": {},
    }
