"""``airia attachments ...`` and ``airia identities ...``."""

import json
import os

import pytest

import airia.cli._attachments

from .conftest import FakeServer, parse_multipart, problem


@pytest.fixture
def cid(run) -> str:
    return json.loads(run("--json", "conversations", "create", "--user-id", "owner")[1])[
        "conversationId"
    ]


@pytest.fixture
def report(tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(os.urandom(300 * 1024))
    return path


def test_upload_human_and_json(run, cid, report, server: FakeServer):
    code, out, err = run("attachments", "upload", cid, str(report))
    assert (code, err) == (0, "")  # not a terminal: no progress bar
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert (fields["blob_id"], fields["file_name"], fields["source"]) == (
        "b1",
        "report.pdf",
        "agent",
    )
    assert parse_multipart(server.last)["file"] == (
        "report.pdf",
        "application/pdf",
        report.read_bytes(),
    )
    code, out, _ = run(
        "--json", "attachments", "upload", cid, str(report), "--source", "user",
        "--content-type", "application/x-custom",
    )  # fmt: skip
    data = json.loads(out)
    assert (data["source"], data["contentType"], data["size"]) == (
        "user",
        "application/x-custom",
        300 * 1024,
    )
    assert parse_multipart(server.last)["source"] == "user"


def test_upload_draws_progress_on_a_terminal(run, cid, report, monkeypatch, server):
    monkeypatch.setattr(airia.cli._attachments, "_stderr_is_tty", lambda: True)
    code, _, err = run("attachments", "upload", cid, str(report))
    assert code == 0
    frames = err.rstrip("\n").split("\r")[1:]
    assert len(frames) > 2
    assert frames[0].startswith("[") and "%" in frames[0]
    assert frames[-1] == f"[{'#' * 30}] 100%  300.0 KiB / 300.0 KiB"
    assert err.endswith("\n") and err.count("\n") == 1
    # the wrapper keeps the size visible, so the upload still has a Content-Length
    assert int(server.last.headers["content-length"]) == len(server.last.content)


def test_upload_of_a_missing_file_is_one_error_line(run, cid, tmp_path):
    code, out, err = run("attachments", "upload", cid, str(tmp_path / "nope.txt"))
    assert (code, out) == (1, "")
    assert err.startswith("error: [Errno 2] No such file or directory") and err.count("\n") == 1


def test_list(run, cid, report):
    run("attachments", "upload", cid, str(report))
    run("attachments", "upload", cid, str(report), "--source", "user")
    code, out, _ = run("attachments", "list", cid)
    assert code == 0
    header, first, second = out.splitlines()
    assert header.split()[:4] == ["BLOB", "ID", "FILE", "NAME"]
    assert first.split()[:4] == ["b1", "report.pdf", "application/pdf", "300.0"]
    assert header.index("SOURCE") == first.index("agent") == second.index("user")
    data = json.loads(run("--json", "attachments", "list", cid)[1])
    assert [a["blobId"] for a in data] == ["b1", "b2"]
    assert data[0]["url"].startswith("http://testserver/blobs/b1?")


def test_download_by_url_and_by_blob_id(run, cid, report, tmp_path, monkeypatch):
    run("attachments", "upload", cid, str(report))
    url = json.loads(run("--json", "attachments", "list", cid)[1])[0]["url"]
    target = tmp_path / "copy.pdf"
    code, out, err = run("attachments", "download", url, "-o", str(target))
    assert (code, err) == (0, "")
    assert out == f"Saved 300.0 KiB to {target}\n"
    assert target.read_bytes() == report.read_bytes()

    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    code, out, _ = run("--json", "attachments", "download", "b1", "--conversation", cid)
    assert code == 0 and json.loads(out) == {"path": "report.pdf", "size": 300 * 1024}
    assert (workdir / "report.pdf").read_bytes() == report.read_bytes()


def test_download_by_url_is_named_as_the_server_names_the_file(
    run, cid, report, tmp_path, monkeypatch
):
    """Without -o, a signed URL's last segment is `content` for every file on this
    server: the file is saved under the name its Content-Disposition gives."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    for name in ("report.pdf", "naïve café.txt"):
        source = tmp_path / name
        source.write_bytes(name.encode() * 10)
        run("attachments", "upload", cid, str(source))
    for attachment in json.loads(run("--json", "attachments", "list", cid)[1]):
        url = attachment["url"]
        code, out, err = run("--json", "attachments", "download", url)
        assert (code, err) == (0, ""), err
        saved = json.loads(out)
        assert saved["path"] == attachment["fileName"]
        assert (workdir / attachment["fileName"]).read_bytes() == attachment[
            "fileName"
        ].encode() * 10


@pytest.mark.parametrize(
    ("stored", "saved"),
    [
        ("naïve-" + "x" * 290 + ".pdf", "naïve-" + "x" * 244 + ".pdf"),
        # Cut on bytes: 125 two-byte letters fit before the extension, not a half.
        ("é" * 300 + ".txt", "é" * 125 + ".txt"),
    ],
)
def test_download_of_a_name_too_long_for_the_file_system_is_shortened(
    run, cid, report, tmp_path, monkeypatch, server: FakeServer, stored, saved
):
    """Stored names may run to 300 characters; a file name holds 255 bytes of UTF-8.
    Saved under its own name, it is cut to fit, its extension kept."""
    assert len(saved.encode()) <= 255 < len(stored.encode())
    monkeypatch.chdir(tmp_path)
    run("attachments", "upload", cid, str(report))
    server.blobs["b1"]["fileName"] = stored
    code, out, err = run("--json", "attachments", "download", "b1", "--conversation", cid)
    assert (code, err) == (0, "")
    assert json.loads(out) == {"path": saved, "size": 300 * 1024}
    assert (tmp_path / saved).read_bytes() == report.read_bytes()
    (tmp_path / saved).unlink()
    url = json.loads(run("--json", "attachments", "list", cid)[1])[0]["url"]
    code, out, err = run("attachments", "download", url)  # named by Content-Disposition
    assert (code, err, out) == (0, "", f"Saved 300.0 KiB to {saved}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["report.pdf", saved])


def test_download_to_stdout(run, cid, tmp_path, server: FakeServer):
    note = tmp_path / "note.txt"
    note.write_bytes(b"hello\n")
    run("attachments", "upload", cid, str(note))
    code, out, err = run("attachments", "download", server.blobs["b1"]["url"], "-o", "-")
    assert (code, out, err) == (0, "hello\n", "")


def test_download_errors(run, cid, report, tmp_path):
    run("attachments", "upload", cid, str(report))
    code, _, err = run("attachments", "download", "b1")
    assert code == 2 and err == "error: a blob id needs --conversation ID (or pass its URL)\n"
    code, _, err = run("attachments", "download", "b9", "--conversation", cid)
    assert code == 1 and err == f"error: no attachment b9 in conversation {cid}\n"
    code, _, err = run(
        "attachments", "download", "http://testserver/blobs/b1?sig=bad", "-o", str(tmp_path / "x")
    )
    assert code == 1
    assert err.startswith("error: 403 Forbidden: Invalid or expired signature")
    assert not (tmp_path / "x").exists()


def test_identities_add_list_find_remove(run, cid, server: FakeServer):
    triple = ("--system", "Slack", "--channel", "C1", "--thread", "T1")
    code, out, err = run("identities", "add", cid, *triple)
    assert (code, err) == (0, "")
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert (fields["id"], fields["external_system"], fields["conversation_id"]) == (
        "xi1",
        "Slack",
        cid,
    )
    assert json.loads(server.last.content) == {
        "externalSystem": "Slack",
        "externalChannelId": "C1",
        "externalThreadId": "T1",
    }

    code, out, _ = run("identities", "list", cid)
    header, row = out.splitlines()
    assert header.split() == ["IDENTITY", "ID", "SYSTEM", "CHANNEL", "THREAD", "CREATED"]
    assert row.split()[:4] == ["xi1", "Slack", "C1", "T1"]
    assert [i["id"] for i in json.loads(run("--json", "identities", "list", cid)[1])] == ["xi1"]

    code, out, _ = run("--json", "identities", "find", *triple)
    assert code == 0 and json.loads(out)["conversationId"] == cid
    code, out, _ = run("identities", "find", *triple)
    assert dict(line.split(None, 1) for line in out.splitlines())["conversation_id"] == cid

    code, out, _ = run("identities", "remove", cid, "xi1")
    assert (code, out) == (0, "Removed external identity xi1\n")
    code, _, err = run("identities", "find", *triple)
    assert code == 1 and err.startswith("error: 404 Not Found: External identity not found")


def test_identity_conflict_names_the_existing_conversation(run, cid):
    triple = ("--system", "Slack", "--channel", "C1", "--thread", "T1")
    run("identities", "add", cid, *triple)
    other = json.loads(run("--json", "conversations", "create", "--user-id", "owner")[1])
    code, out, err = run("identities", "add", other["conversationId"], *triple)
    assert (code, out) == (1, "")
    assert err == (
        "error: 409 Conflict: External identity already mapped "
        f"(conversation {cid}) (correlation id server-cid)\n"
    )
    assert run("identities", "add", cid, "--system", "Slack")[0] == 2


def test_conflict_line_names_the_conversation_once(run, cid, server: FakeServer):
    detail = "Slack/C1/T1 already points to conversation c-old"
    server.script(problem(409, "Already mapped", detail=detail, conversationId="c-old"))
    code, _, err = run(
        "identities", "add", cid, "--system", "Slack", "--channel", "C1", "--thread", "T1"
    )
    assert code == 1
    assert err == f"error: 409 Conflict: Already mapped ({detail}) (correlation id server-cid)\n"
