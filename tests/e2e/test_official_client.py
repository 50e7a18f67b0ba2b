"""The official `airia` package from PyPI, unmodified, pointed at our server.

It lives in its own throw-away virtual environment, so nothing of ours (our
own `airia` package included) can leak into what it sees.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

from .support import LiveServer, clean_env

pytestmark = pytest.mark.e2e

OFFICIAL_PACKAGE = "airia==0.1.41"  # the release whose source we reviewed
INSTALL_SECONDS = 600

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, sys, uuid

    from airia import AiriaAPIError, AiriaAsyncClient, AiriaClient

    base_url, api_key = sys.argv[1], sys.argv[2]
    results = {}
    client = AiriaClient(base_url=base_url, api_key=api_key)

    basic = client.conversations.create_conversation(user_id="user_123")
    results["basic"] = basic.model_dump()

    guid = str(uuid.uuid4())
    full = client.conversations.create_conversation(
        user_id=guid,
        title="My Research Session",
        deployment_id="deployment_456",
        data_source_files={"documents": ["doc1.pdf", "doc2.txt"]},
        is_bookmarked=True,
    )
    results["full"] = full.model_dump()

    got = client.conversations.get_conversation(conversation_id=full.conversation_id)
    results["got"] = got.model_dump(mode="json")

    client.conversations.delete_conversation(conversation_id=full.conversation_id)
    results["deleted"] = True
    unknown = (("deleted_id", full.conversation_id), ("placeholder", "your_conversation_id"))
    for label, cid in unknown:
        try:
            client.conversations.get_conversation(conversation_id=cid)
        except AiriaAPIError as e:
            results[label] = {"status_code": e.status_code, "message": e.message}
        else:
            results[label] = None
    try:
        client.conversations.delete_conversation(conversation_id=full.conversation_id)
    except AiriaAPIError as e:
        results["delete_again"] = {"status_code": e.status_code, "message": e.message}
    client.close()

    async def run_async():
        aclient = AiriaAsyncClient(base_url=base_url, api_key=api_key)
        try:
            created = await aclient.conversations.create_conversation(
                user_id="user_async", title="async", data_source_files={"d": ["a.txt"]}
            )
            fetched = await aclient.conversations.get_conversation(
                conversation_id=created.conversation_id
            )
            results["async_created"] = created.model_dump()
            results["async_got"] = fetched.model_dump(mode="json")
            try:
                await aclient.conversations.get_conversation(conversation_id="nope")
            except AiriaAPIError as e:
                results["async_missing"] = {"status_code": e.status_code, "message": e.message}
        finally:
            await aclient.close()

    asyncio.run(run_async())
    print(json.dumps(results))
    """
)


def isolated_env() -> dict[str, str]:
    """No AIRIA_* settings and no PYTHONPATH, which could put our `airia` first."""
    env = clean_env()
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="session")
def official_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("official-airia")
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    python = root / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    result = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            OFFICIAL_PACKAGE,
        ],
        capture_output=True,
        text=True,
        timeout=INSTALL_SECONDS,
        check=False,
        env=isolated_env(),
    )
    if result.returncode != 0:
        pytest.fail(
            f"could not install {OFFICIAL_PACKAGE} from PyPI (is the network down?):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return python


def run_official(python: Path, server: LiveServer, tmp_path: Path) -> dict:
    script = tmp_path / "official.py"
    script.write_text(SCRIPT)
    result = subprocess.run(
        # The official client joins paths onto base_url, so it wants the slash.
        [
            str(python),
            "-W",
            "error::RuntimeWarning",
            str(script),
            server.base_url + "/",
            server.api_key,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=isolated_env(),
        cwd=tmp_path,  # not the repository, whose src/airia must not shadow the official one
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return json.loads(result.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def official_results(
    official_python: Path, live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    return run_official(official_python, live_server, tmp_path_factory.mktemp("official-run"))


def test_it_is_really_the_official_package(official_python: Path) -> None:
    result = subprocess.run(
        [str(official_python), "-c", "import airia, sys; print(airia.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=isolated_env(),
        cwd=official_python.parent,
    )
    location = Path(result.stdout.strip())
    assert "site-packages" in location.parts
    assert not location.is_relative_to(Path(__file__).resolve().parents[2])


def test_create_basic(official_results: dict, server: LiveServer) -> None:
    basic = official_results["basic"]
    assert basic["user_id"] == "user_123"
    assert basic["conversation_id"]
    assert basic["deployment_id"]
    host = server.base_url.removeprefix("http://")
    assert basic["websocket_url"].startswith(
        f"ws://{host}/v1/Conversations/{basic['conversation_id']}/ws?"
    )


def test_create_with_every_option_then_get(official_results: dict) -> None:
    full, got = official_results["full"], official_results["got"]
    assert full["deployment_id"] == "deployment_456"
    assert got["conversation_id"] == full["conversation_id"]
    assert got["user_id"] == full["user_id"]
    assert got["title"] == "My Research Session"
    assert got["deployment_id"] == "deployment_456"
    assert got["data_source_files"] == {"documents": ["doc1.pdf", "doc2.txt"]}
    assert got["is_bookmarked"] is True
    assert got["messages"] == []


def test_get_after_delete_is_a_404_with_a_message(official_results: dict) -> None:
    assert official_results["deleted"] is True
    for label in ("deleted_id", "placeholder", "delete_again"):
        error = official_results[label]
        assert error is not None, f"{label}: no error raised"
        assert error["status_code"] == 404, (label, error)
        assert error["message"], (label, error)
    assert official_results["deleted_id"]["message"] == "Conversation not found"


def test_async_client_create_and_get(official_results: dict) -> None:
    created, got = official_results["async_created"], official_results["async_got"]
    assert created["user_id"] == "user_async"
    assert got["conversation_id"] == created["conversation_id"]
    assert got["title"] == "async"
    assert got["data_source_files"] == {"d": ["a.txt"]}
    assert official_results["async_missing"]["status_code"] == 404
    assert official_results["async_missing"]["message"]
