"""The ``airia`` command line, driven through ``main(argv)``."""

import json

import httpx
import pytest

from .conftest import AnswerLost, FakeServer, problem


def test_create_human(run, server: FakeServer):
    code, out, err = run(
        "conversations",
        "create",
        "--user-id",
        "user_123",
        "--title",
        "Hi",
        "--bookmark",
        "--data-source-files",
        '{"docs": ["a.pdf"]}',
    )
    assert (code, err) == (0, "")
    body = json.loads(server.last.content)
    assert body["isBookmarked"] is True and body["dataSourceFiles"] == {"docs": ["a.pdf"]}
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert lines["user_id"] == "user_123"
    assert lines["title"] == "Hi"
    assert lines["is_bookmarked"] == "yes"
    assert lines["created_at"] == "2026-11-26T06:01:34.123456Z"


def test_create_json(run):
    code, out, _ = run("--json", "conversations", "create", "--user-id", "user_123")
    data = json.loads(out)
    assert code == 0
    assert data["userId"] == "user_123"
    assert data["websocketUrl"].startswith("ws://")
    assert data["createdAt"] == "2026-11-26T06:01:34.123456Z"


def test_global_options_after_the_command(run, server: FakeServer):
    code, out, _ = run(
        "conversations",
        "create",
        "--user-id",
        "u",
        "--json",
        "--correlation-id",
        "cid-9",
        "--base-url",
        "http://elsewhere:9000",
    )
    assert code == 0 and json.loads(out)["userId"] == "u"
    assert server.last.headers["X-Correlation-ID"] == "cid-9"
    assert str(server.last.url) == "http://elsewhere:9000/v1/Conversations"


def test_token_option(run, server: FakeServer, monkeypatch):
    monkeypatch.delenv("AIRIA_API_KEY")
    assert run("--token", "jwt", "conversations", "list")[0] == 0
    assert server.last.headers["Authorization"] == "Bearer jwt"


def test_get_human_and_json(run, server: FakeServer):
    cid = json.loads(run("--json", "conversations", "create", "--user-id", "u")[1])[
        "conversationId"
    ]
    code, out, _ = run("conversations", "get", cid)
    assert code == 0
    assert f"conversation_id        {cid}" in out
    assert out.splitlines()[-1].split() == ["messages", "0"]
    code, out, _ = run("conversations", "get", cid, "--json")
    assert json.loads(out)["messages"] == []


def test_get_counts_every_message_when_it_shows_only_the_newest(run, server: FakeServer):
    message = {
        "id": "m",
        "conversationId": "c",
        "message": "last",
        "role": "user",
        "createdAt": "2026-11-26T06:01:34.123456Z",
        "updatedAt": "2026-11-26T06:01:34.123456Z",
    }
    server.script(
        httpx.Response(
            200,
            json={
                "conversationId": "c",
                "userId": "u",
                "dataSourceFiles": {},
                "isBookmarked": False,
                "messages": [message],
                "messageCount": 1005,
            },
        )
    )
    code, out, err = run("conversations", "get", "c")
    assert code == 0, err
    assert out.splitlines()[-2].split(None, 1) == ["messages", "1005 (the newest 1 below)"]
    assert "message_count" not in out


def test_update(run, server: FakeServer):
    cid = json.loads(run("--json", "conversations", "create", "--user-id", "u")[1])[
        "conversationId"
    ]
    code, out, _ = run(
        "--json",
        "conversations",
        "update",
        cid,
        "--title",
        "New",
        "--no-bookmark",
        "--last-execution-status",
        "Completed",
        "--last-execution-id",
        "e1",
    )
    assert code == 0
    assert json.loads(server.last.content) == {
        "title": "New",
        "isBookmarked": False,
        "lastExecutionStatus": "Completed",
        "lastExecutionId": "e1",
    }
    assert json.loads(out)["title"] == "New"
    run("conversations", "update", cid, "--title", "T")
    assert json.loads(server.last.content) == {"title": "T"}


def test_delete(run, server: FakeServer):
    cid = json.loads(run("--json", "conversations", "create", "--user-id", "u")[1])[
        "conversationId"
    ]
    assert run("conversations", "delete", cid) == (0, f"Deleted conversation {cid}\n", "")
    assert server.conversations == {}


def test_list_table_and_footer(run, server: FakeServer):
    run("conversations", "create", "--user-id", "alice", "--title", "First")
    run("conversations", "create", "--user-id", "bob", "--title", "A much longer title")
    code, out, _ = run(
        "conversations",
        "list",
        "--page",
        "1",
        "--page-size",
        "10",
        "--sort-by",
        "title",
        "--sort-direction",
        "asc",
        "--filter",
        "i",
        "--user-id",
        "alice",
    )
    assert code == 0
    assert dict(server.last.url.params) == {
        "PageNumber": "1",
        "PageSize": "10",
        "SortBy": "title",
        "SortDirection": "asc",
        "filter": "i",
        "userId": "alice",
    }
    header, first, second, footer = out.splitlines()
    assert header.split()[:3] == ["CONVERSATION", "ID", "TITLE"]
    # Columns are aligned: USER starts at the same offset on every row.
    assert header.index("USER") == first.index("alice") == second.index("bob")
    assert footer == "page 1, 2 of 2"


def test_list_json(run):
    run("conversations", "create", "--user-id", "u")
    data = json.loads(run("conversations", "list", "--json")[1])
    assert data["totalCount"] == 1 and data["items"][0]["messageCount"] == 0


def test_api_error_is_one_line_exit_1(run):
    code, out, err = run("conversations", "get", "missing", "--correlation-id", "c-1")
    assert code == 1 and out == ""
    assert err == "error: 404 Not Found: Conversation not found (correlation id server-cid)\n"


def test_error_shows_detail_when_it_adds_something(run, server: FakeServer):
    server.script(problem(422, "Validation failed", detail="title: must not be empty"))
    code, _, err = run("conversations", "update", "c", "--title", "x")
    assert code == 1
    assert err.startswith(
        "error: 422 Unprocessable Entity: Validation failed (title: must not be empty)"
    )
    assert len(err.splitlines()) == 1


def test_connection_refused_is_one_line(run, server: FakeServer):
    server.script(*(httpx.ConnectError("[Errno 111] Connection refused") for _ in range(3)))
    code, _, err = run("conversations", "get", "c")
    assert code == 1
    assert err.startswith("error: Could not connect to http://localhost:8000/v1/Conversations/c")
    assert "Connection refused" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["conversations", "create"],
        ["conversations", "frobnicate"],
        ["conversations", "list", "--sort-direction", "up"],
        ["conversations", "create", "--user-id", "u", "--data-source-files", "{nope"],
        ["conversations", "create", "--user-id", "u", "--data-source-files", "[1]"],
        [],
    ],
)
def test_usage_errors_exit_2(run, argv):
    code, out, err = run(*argv)
    assert code == 2 and out == ""
    assert "error:" in err


def test_missing_credentials_exit_2(run, monkeypatch):
    monkeypatch.delenv("AIRIA_API_KEY")
    code, _, err = run("conversations", "list")
    assert code == 2
    assert err.startswith("error: Authentication required")
    assert "--api-key" in err and "--token" in err and "bearer_token" not in err


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--api-key", "k", "--token", "t"], "error: Cannot provide both --api-key and --token."),
        (["--token", "t\x01"], "error: --token must not "),
        (["--api-key", "k\x01"], "error: --api-key must not "),
        (
            ["--base-url", "localhost/api_key"],
            "error: --base-url 'localhost/api_key' is not a usable base URL",
        ),
        (["--base-url", "http://h:abc/"], "error: --base-url 'http://h:abc/' is not a usable"),
        (["--correlation-id", "é"], "error: --correlation-id must be"),
    ],
)
def test_credential_errors_name_the_options(run, server: FakeServer, options, expected):
    """The SDK names its parameters (`bearer_token`); the command line names its own
    options, and leaves what the user typed as it was."""
    code, out, err = run(*options, "conversations", "list")
    assert (code, out) == (2, "") and server.requests == []
    assert err.startswith(expected), err


@pytest.mark.parametrize("where", ["option", "environment"])
def test_a_base_url_without_scheme_exits_2(run, server: FakeServer, monkeypatch, where):
    if where == "option":
        code, out, err = run("--base-url", "localhost:18100", "conversations", "list")
    else:
        monkeypatch.setenv("AIRIA_BASE_URL", "localhost:18100")
        code, out, err = run("conversations", "list")
    assert (code, out) == (2, "") and server.requests == []
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "'localhost:18100'" in err and "http:// or https://" in err


def test_both_credentials_exit_2(run):
    code, _, err = run("--api-key", "k", "--token", "t", "conversations", "list")
    assert code == 2 and "both" in err


def test_help_exits_0(run):
    code, out, _ = run("conversations", "--help")
    assert code == 0 and "create" in out


@pytest.mark.parametrize(
    "option", [["--correlation-id", "caf\u00e9"], ["--api-key", "k\u2019y"], ["--api-key", "a\nb"]]
)
def test_a_value_no_header_can_carry_is_one_error_line(run, server: FakeServer, option):
    code, out, err = run(*option, "conversations", "get", "c1")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert server.requests == []


def test_a_reader_that_stops_reading_ends_the_command_quietly(run, server: FakeServer, monkeypatch):
    """`airia conversations get ID | head -1`: no traceback, no error line; the shell's
    status for a writer whose reader went away (141)."""
    import os
    import sys

    import airia.cli

    created = json.loads(run("--json", "conversations", "create", "--user-id", "u")[1])
    read_end, write_end = os.pipe()
    os.close(read_end)
    broken = os.fdopen(write_end, "w")
    monkeypatch.setattr(sys, "stdout", broken)
    try:
        code = airia.cli.main(["conversations", "get", created["conversationId"]])
    finally:
        monkeypatch.undo()
    broken.close()  # flushes into /dev/null now, not the closed pipe
    assert code == airia.cli.EXIT_BROKEN_PIPE == 141


# A line break forges a row (U+2028 and U+2029 are line breaks to many terminals),
# ESC sequences (a colour, OSC "set the window title") drive the reader's terminal,
# a bidi control (an override, an isolate, the marks RLM, LRM, ALM) reorders what
# is shown.
HOSTILE = (
    "a\nb\r\tc\x1b[31mred\x1b]0;pwned\x07\x7f\x9b\u202eevil\u2066\u2028row\u2029\u200f\u200e\u061c"
)
SHOWN = (
    "a\\nb\\r\\tc\\x1b[31mred\\x1b]0;pwned\\x07\\x7f\\x9b\\u202eevil\\u2066"
    "\\u2028row\\u2029\\u200f\\u200e\\u061c"
)


def test_server_text_is_shown_escaped_never_raw(run, server: FakeServer):
    created = run("--json", "conversations", "create", "--user-id", HOSTILE, "--title", HOSTILE)
    cid = json.loads(created[1])["conversationId"]
    message = {"id": "m1", "conversationId": cid, "message": HOSTILE, "role": "user"}
    message["createdAt"] = message["updatedAt"] = "2026-11-26T06:01:34Z"
    server.conversations[cid]["messages"] = [message]
    code, out, err = run("conversations", "list")
    assert (code, err) == (0, "")
    _header, row, footer = out.splitlines()
    assert row.count(SHOWN) == 2 and footer == "page 1, 1 of 1"
    code, out, err = run("conversations", "get", cid)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[-2].split(None, 1) == ["messages", "1"] and lines[-1].endswith(SHOWN)
    assert [line.split(None, 1)[1] for line in lines if line.startswith(("title", "user_id"))] == [
        SHOWN,
        SHOWN,
    ]
    # Only the line breaks between lines are left raw: nothing else unprintable.
    assert out.replace("\n", "").isprintable()
    assert json.loads(run("--json", "conversations", "get", cid)[1])["title"] == HOSTILE


def test_an_error_from_the_server_is_shown_escaped(run, server: FakeServer):
    server.script(problem(404, f"Not found{HOSTILE}", detail="gone\nerror: forged"))
    code, _, err = run("conversations", "get", "c")
    assert code == 1 and err.count("\n") == 1 and "\x1b" not in err
    assert f"Not found{SHOWN}" in err and "(gone\\nerror: forged)" in err


# -- writes that send an Idempotency-Key --------------------------------------------

WRITES = {
    "conversations create": ["conversations", "create", "--user-id", "u"],
    "conversations update": ["conversations", "update", "c", "--title", "t"],
    "conversations delete": ["conversations", "delete", "c"],
    "messages add": ["messages", "add", "c", "--message", "hi"],
    "messages truncate": ["messages", "truncate", "c", "m"],
    "identities remove": ["identities", "remove", "c", "xi1"],
    "attachments upload": ["attachments", "upload", "c", "report.pdf"],
}


def _running() -> httpx.Response:
    response = problem(409, "A request with this Idempotency-Key is still running")
    response.headers["Retry-After"] = "1"
    return response


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4")


@pytest.mark.parametrize("write", WRITES)
def test_a_write_sends_the_key_given(run, server: FakeServer, in_tmp, write):
    run(*WRITES[write], "--idempotency-key", "job-7")
    assert server.last.headers["Idempotency-Key"] == "job-7"


@pytest.mark.parametrize("write", WRITES)
@pytest.mark.parametrize(
    "failure",
    [lambda: httpx.ConnectError("refused"), lambda: problem(503, "busy"), _running],
    ids=["connect", "503", "409-running"],
)
def test_a_write_that_may_have_been_done_names_its_key(
    run, server: FakeServer, in_tmp, write, failure
):
    """Re-run as it was, with a new key, it could be done twice: the line says how not to."""
    server.script(*(failure() for _ in range(40)))
    code, out, err = run(*WRITES[write])
    key = server.last.headers["Idempotency-Key"]
    assert code == 1 and out == "" and len(err.splitlines()) == 1
    assert err.startswith("error: ")
    assert err.rstrip().endswith(
        f"; it may have been done: re-run with --idempotency-key {key} to have it done once"
    )


def test_a_write_that_definitely_failed_names_no_key(run, server: FakeServer):
    code, _, err = run("conversations", "delete", "missing")
    assert code == 1 and "idempotency-key" not in err


def test_a_key_the_shell_would_split_is_quoted(run, server: FakeServer):
    server.script(*(httpx.ConnectError("refused") for _ in range(3)))
    _, _, err = run("messages", "add", "c", "--message", "hi", "--idempotency-key", "my job 7")
    assert "--idempotency-key 'my job 7' to have" in err


def test_a_delete_whose_answer_was_lost_says_it_was_done(run, server: FakeServer):
    cid = json.loads(server._create({"userId": "u"}).content)["conversationId"]
    server.script(AnswerLost())
    code, out, err = run("conversations", "delete", cid)
    assert (code, err) == (0, "") and out == f"Deleted conversation {cid}\n"
    assert cid not in server.conversations
