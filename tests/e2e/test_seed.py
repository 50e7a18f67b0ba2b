# ruff: noqa: W291  (the seed example has a trailing space; it stays verbatim)
"""The seed's three examples, verbatim apart from real conversation ids, with the server's
URL and key in AIRIA_BASE_URL and AIRIA_API_KEY only.

Each runs as its own Python process, as a user would run a copied snippet.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import httpx
import pytest

from .support import LiveServer, clean_env

pytestmark = pytest.mark.e2e

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
TIMESTAMP = r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?"

CLIENT_LITERAL = 'AiriaClient(api_key="your_api_key")'
"""As the examples have it: the placeholder key stands for AIRIA_API_KEY, and the base URL
comes from AIRIA_BASE_URL, so the line runs as written against the test server."""

CREATE_EXAMPLE = """
from airia import AiriaClient

client = AiriaClient(api_key="your_api_key")
# Or with bearer token: client = AiriaClient.with_bearer_token(bearer_token="your_bearer_token")

# Create a basic conversation
conversation = client.conversations.create_conversation(
    user_id="user_123"
)
print(f"Created conversation: {conversation.conversation_id}")
print(f"WebSocket URL: {conversation.websocket_url}")

# Create a conversation with all options
conversation = client.conversations.create_conversation(
    user_id="user_123",
    title="My Research Session",
    deployment_id="deployment_456", 
    data_source_files={"documents": ["doc1.pdf", "doc2.txt"]},
    is_bookmarked=True
)
print(f"Created bookmarked conversation: {conversation.conversation_id}")
"""

GET_EXAMPLE = """
from airia import AiriaClient

client = AiriaClient(api_key="your_api_key")
# Or with bearer token: client = AiriaClient.with_bearer_token(bearer_token="your_bearer_token")

# Get conversation details
conversation = client.conversations.get_conversation(conversation_id="your_conversation_id")

print(f"Conversation ID: {conversation.conversation_id}")
print(f"User ID: {conversation.user_id}")
print(f"Title: {conversation.title}")
print(f"Created: {conversation.created_at}")
print(f"Updated: {conversation.updated_at}")
print(f"Bookmarked: {conversation.is_bookmarked}")
if conversation.deployment_id:
    print(f"Deployment ID: {conversation.deployment_id}")
"""

DELETE_EXAMPLE = """
from airia import AiriaClient

client = AiriaClient(api_key="your_api_key")

# Delete a conversation (permanently removes all data)
client.conversations.delete_conversation(conversation_id="your_conversation_id")
print("Conversation deleted successfully")

# Handle deletion of non-existent conversations
try:
    client.delete_conversation(conversation_id="nonexistent_id")
except AiriaAPIError as e:
    if e.status_code == 404:
        print("Conversation not found")
    else:
        print(f"Error deleting conversation: {e.message}")
"""


def adapt(example: str, *, conversation_id: str | None = None) -> str:
    """The example as documented, with a real conversation id for `your_conversation_id`."""
    assert example.count(CLIENT_LITERAL) == 1
    code = example
    if conversation_id is not None:
        assert code.count('"your_conversation_id"') == 1
        code = code.replace('"your_conversation_id"', f'"{conversation_id}"')
    return textwrap.dedent(code)


def run_example(server: LiveServer, code: str) -> list[str]:
    env = clean_env(AIRIA_BASE_URL=server.base_url, AIRIA_API_KEY=server.api_key)
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout.splitlines()


def create(server: LiveServer, **body) -> dict:
    response = httpx.post(
        f"{server.base_url}/v1/Conversations",
        json={"userId": "user_123", **body},
        headers=server.headers(),
        timeout=10,
    )
    assert response.status_code in (200, 201), response.text
    return response.json()


def test_create_example(server: LiveServer) -> None:
    lines = run_example(server, adapt(CREATE_EXAMPLE))

    assert len(lines) == 3, lines
    first = re.fullmatch(f"Created conversation: ({UUID})", lines[0])
    assert first, lines[0]
    ws = re.fullmatch(r"WebSocket URL: (ws://\S+)", lines[1])
    assert ws, lines[1]
    host = server.base_url.removeprefix("http://")
    assert ws.group(1).startswith(f"ws://{host}/v1/Conversations/{first.group(1)}/ws?ticket=")
    second = re.fullmatch(f"Created bookmarked conversation: ({UUID})", lines[2])
    assert second, lines[2]
    assert second.group(1) != first.group(1)

    stored = httpx.get(
        f"{server.base_url}/v1/Conversations/{second.group(1)}",
        headers=server.headers(),
        timeout=10,
    ).json()
    assert stored["userId"] == "user_123"
    assert stored["title"] == "My Research Session"
    assert stored["deploymentId"] == "deployment_456"
    assert stored["dataSourceFiles"] == {"documents": ["doc1.pdf", "doc2.txt"]}
    assert stored["isBookmarked"] is True


def test_get_example(server: LiveServer) -> None:
    created = create(server, title="My Research Session", deploymentId="deployment_456")

    lines = run_example(server, adapt(GET_EXAMPLE, conversation_id=created["conversationId"]))

    assert lines[0] == f"Conversation ID: {created['conversationId']}"
    assert lines[1] == "User ID: user_123"
    assert lines[2] == "Title: My Research Session"
    assert re.fullmatch(f"Created: {TIMESTAMP}", lines[3]), lines[3]
    assert re.fullmatch(f"Updated: {TIMESTAMP}", lines[4]), lines[4]
    assert lines[5] == "Bookmarked: False"
    assert lines[6] == "Deployment ID: deployment_456"
    assert len(lines) == 7, lines


def test_get_example_without_deployment_prints_the_default(server: LiveServer) -> None:
    created = create(server)

    lines = run_example(server, adapt(GET_EXAMPLE, conversation_id=created["conversationId"]))

    assert lines[2] == "Title: None"
    assert re.fullmatch(r"Deployment ID: \S+", lines[-1]), lines


def test_delete_example(server: LiveServer) -> None:
    """As written, it imports only `AiriaClient` and catches `AiriaAPIError`: `import
    airia` makes that name a builtin, so the 404 is caught, not a NameError."""
    created = create(server)
    code = adapt(DELETE_EXAMPLE, conversation_id=created["conversationId"])
    assert "import AiriaAPIError" not in code and ", AiriaAPIError" not in code

    lines = run_example(server, code)

    assert lines == ["Conversation deleted successfully", "Conversation not found"]
    gone = httpx.get(
        f"{server.base_url}/v1/Conversations/{created['conversationId']}",
        headers=server.headers(),
        timeout=10,
    )
    assert gone.status_code == 404
