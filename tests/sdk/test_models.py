"""Parsing server responses into the public models."""

import inspect
from datetime import datetime, timezone

import httpx
import pytest

from airia import AiriaAsyncClient, AiriaClient, APIResponseValidationError
from airia.constants import DEFAULT_BASE_URL
from airia.types.api import (
    ConversationFeedResponse,
    CreateConversationResponse,
    GetConversationResponse,
)
from airia.types.api.conversations import ConversationMessage, PolicyRedaction

from .conftest import NOW, FakeServer

UTC_NOW = datetime(2026, 11, 26, 6, 1, 34, 123456, tzinfo=timezone.utc)


def test_create_response_parsed(api):
    created = api()("create_conversation", user_id="user_123", title="T")
    assert isinstance(created, CreateConversationResponse)
    assert created.user_id == "user_123"
    assert created.websocket_url.startswith("ws://")
    assert created.deployment_id == "default-deployment"
    assert created.created_at == UTC_NOW
    assert created.title == "T"
    assert created.space_name is None


def test_get_response_with_messages_and_redactions(api, server: FakeServer):
    message = {
        "id": "m1",
        "conversationId": "c1",
        "message": "hello",
        "role": "user",
        "images": None,
        "createdAt": NOW,
        "updatedAt": NOW,
        "userId": "user_123",
    }
    server.script(
        httpx.Response(
            200,
            json={
                "conversationId": "c1",
                "userId": "user_123",
                "title": None,
                "createdAt": NOW,
                "updatedAt": NOW,
                "isBookmarked": True,
                "deploymentId": "d",
                "dataSourceFiles": {},
                "websocketUrl": "ws://x",
                "messages": [message],
                "policyRedactions": {"0": {"violatingText": "x", "violatingMessageIndex": 0}},
                "lastExecutionStatus": "Completed",
                "lastExecutionId": "e1",
            },
        )
    )
    got = api()("get_conversation", "c1")
    assert isinstance(got, GetConversationResponse)
    assert got.updated_at == UTC_NOW
    assert got.messages == [ConversationMessage.model_validate(message)]
    assert got.messages[0].user_id == "user_123"
    assert got.policy_redactions == {
        "0": PolicyRedaction(violating_text="x", violating_message_index=0)
    }
    assert got.last_execution_status == "Completed"


def test_unknown_fields_are_kept():
    got = GetConversationResponse.model_validate(
        {
            "conversationId": "c",
            "userId": "u",
            "messages": [],
            "dataSourceFiles": {},
            "isBookmarked": False,
            "brandNewField": {"a": 1},
        }
    )
    assert got.model_extra == {"brandNewField": {"a": 1}}
    assert got.model_dump(by_alias=True)["brandNewField"] == {"a": 1}


def test_older_server_without_timestamps_still_parses():
    got = GetConversationResponse.model_validate(
        {
            "conversationId": "c",
            "userId": "u",
            "messages": [],
            "dataSourceFiles": {},
            "isBookmarked": False,
        }
    )
    assert got.created_at is None and got.updated_at is None


def test_official_required_fields_stay_required():
    with pytest.raises(ValueError, match="websocketUrl"):
        CreateConversationResponse.model_validate(
            {"conversationId": "c", "userId": "u", "deploymentId": "d"}
        )


def test_populate_by_name():
    item = CreateConversationResponse(
        conversation_id="c", user_id="u", websocket_url="ws://x", deployment_id="d"
    )
    assert item.model_dump(by_alias=True, exclude_none=True) == {
        "conversationId": "c",
        "userId": "u",
        "websocketUrl": "ws://x",
        "deploymentId": "d",
    }


def test_feed_parsed(api):
    call = api()
    call("create_conversation", user_id="a", title="one")
    call("create_conversation", user_id="b", title="two", is_bookmarked=True)
    feed = call("get_conversations_feed")
    assert isinstance(feed, ConversationFeedResponse)
    assert feed.total_count == 2
    assert [i.title for i in feed.items] == ["one", "two"]
    assert feed.items[1].is_bookmarked and feed.items[1].message_count == 0
    assert feed.items[0].updated_at == UTC_NOW


@pytest.mark.parametrize(
    "body", [{"text": "<html>proxy</html>"}, {"json": {"items": 3}}], ids=["html", "shape"]
)
def test_unexpected_success_body_is_an_api_error(api, server: FakeServer, body):
    server.script(httpx.Response(200, **body))
    with pytest.raises(APIResponseValidationError) as info:
        api()("get_conversations_feed")
    assert info.value.status_code == 200


def test_the_official_packages_client_modules_import(server: FakeServer) -> None:
    """Code written for the official package imports (and patches) the clients under
    `airia.client.*`: the same classes are there."""
    from unittest import mock

    import airia
    from airia.client import AiriaAsyncClient, AiriaClient
    from airia.client.async_client import AiriaAsyncClient as AsyncFromModule
    from airia.client.base_client import AiriaBaseClient
    from airia.client.conversations import AsyncConversations, Conversations
    from airia.client.sync_client import AiriaClient as FromModule

    assert AiriaClient is FromModule is airia.AiriaClient
    assert AiriaAsyncClient is AsyncFromModule is airia.AiriaAsyncClient
    assert issubclass(AiriaClient, AiriaBaseClient) and issubclass(
        AiriaAsyncClient, AiriaBaseClient
    )
    http = httpx.Client(transport=httpx.MockTransport(server))
    client = AiriaClient(base_url="http://testserver/", api_key="k", http_client=http)
    assert isinstance(client.conversations, Conversations)
    assert isinstance(AiriaAsyncClient(api_key="k").conversations, AsyncConversations)
    with mock.patch("airia.client.sync_client.AiriaClient") as patched:
        from airia.client.sync_client import AiriaClient as seen

        assert seen is patched


# The official package's (airia 0.1.41) signatures at its own import paths: names,
# kinds, order and defaults (its base URL default is its DEFAULT_BASE_URL, as ours is).
POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD
OFFICIAL_BASE_CLIENT = [
    ("base_url", DEFAULT_BASE_URL),
    ("api_key", None),
    ("bearer_token", None),
    ("timeout", 30.0),
    ("log_requests", False),
    ("custom_logger", None),
]


def test_the_official_packages_module_surface(server: FakeServer) -> None:
    from airia.client.base_client import AiriaBaseClient
    from airia.client.conversations import AsyncConversations, Conversations
    from airia.client.conversations.async_conversations import AsyncConversations as AsyncMod
    from airia.client.conversations.base_conversations import BaseConversations
    from airia.client.conversations.sync_conversations import Conversations as SyncMod

    assert SyncMod is Conversations and AsyncMod is AsyncConversations
    assert issubclass(Conversations, BaseConversations)
    assert issubclass(AsyncConversations, BaseConversations)

    parameters = list(inspect.signature(AiriaBaseClient).parameters.values())
    official = parameters[: len(OFFICIAL_BASE_CLIENT)]
    assert [(p.name, p.default) for p in official] == OFFICIAL_BASE_CLIENT
    assert all(p.kind is POSITIONAL for p in official)
    # Anything more is ours, optional and by keyword, so the official calls still bind.
    extra = parameters[len(OFFICIAL_BASE_CLIENT) :]
    assert all(p.kind is p.KEYWORD_ONLY and p.default is not p.empty for p in extra)

    base = AiriaBaseClient("http://testserver/", "k", None, 5.0, False, None)
    assert (base.base_url, base.api_key, base.timeout) == ("http://testserver/", "k", 5.0)
    assert AiriaBaseClient(api_key="k").base_url == DEFAULT_BASE_URL
    http = httpx.Client(transport=httpx.MockTransport(server))
    client = AiriaClient("http://testserver/", "k", http_client=http)
    assert isinstance(client, AiriaBaseClient)
    assert isinstance(AiriaAsyncClient(api_key="k"), AiriaBaseClient)
    assert client.create_conversation(user_id="u").user_id == "u"
