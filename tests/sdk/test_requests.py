"""What goes on the wire: method, URL, headers, body and query."""

import json
import uuid

import httpx
import pytest

from airia import NotFoundError, __version__

from .conftest import API_KEY, FakeServer


def test_create_sends_every_field(api, server: FakeServer):
    api()("create_conversation", user_id="user_123")
    request = server.last
    assert request.method == "POST"
    assert str(request.url) == "http://testserver/v1/Conversations"
    assert json.loads(request.content) == {
        "userId": "user_123",
        "title": None,
        "deploymentId": None,
        "dataSourceFiles": {},
        "isBookmarked": False,
    }


def test_create_with_all_options(api, server: FakeServer):
    api()(
        "create_conversation",
        user_id="user_123",
        title="My Research Session",
        deployment_id="deployment_456",
        data_source_files={"documents": ["doc1.pdf", "doc2.txt"]},
        is_bookmarked=True,
    )
    assert json.loads(server.last.content) == {
        "userId": "user_123",
        "title": "My Research Session",
        "deploymentId": "deployment_456",
        "dataSourceFiles": {"documents": ["doc1.pdf", "doc2.txt"]},
        "isBookmarked": True,
    }


def test_api_key_headers(api, server: FakeServer):
    api()("create_conversation", user_id="u")
    headers = server.last.headers
    assert headers["X-API-KEY"] == API_KEY
    assert "authorization" not in headers
    assert headers["User-Agent"] == f"airia-conversations-python/{__version__}"
    assert headers["Content-Type"] == "application/json"


def test_bearer_headers(api, server: FakeServer):
    api(api_key=None, bearer_token="jwt.token.here")("create_conversation", user_id="u")
    assert server.last.headers["Authorization"] == "Bearer jwt.token.here"
    assert "x-api-key" not in server.last.headers


def test_correlation_id_given_is_sent(api, server: FakeServer):
    api()("create_conversation", user_id="u", correlation_id="trace-42")
    assert server.last.headers["X-Correlation-ID"] == "trace-42"


def test_correlation_id_is_fresh_uuid_per_call(api, server: FakeServer):
    call = api()
    call("create_conversation", user_id="u")
    call("create_conversation", user_id="u")
    first, second = (r.headers["X-Correlation-ID"] for r in server.requests)
    assert first != second
    assert uuid.UUID(first).version == 4


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("correlation_id", "bad\nid"),
        ("correlation_id", "caf\u00e9"),
        ("idempotency_key", " "),
        ("idempotency_key", "k\r\nX-Injected: 1"),
        ("idempotency_key", "\u201ckey\u201d"),
        ("idempotency_key", "k1 "),
        ("idempotency_key", " k1"),
        ("correlation_id", "id "),
    ],
)
def test_a_header_value_the_sdk_cannot_send_is_a_value_error_and_sends_nothing(
    api, server: FakeServer, sleeps: list[float], argument: str, value: str
):
    """Not an APIConnectionError after retries, nor a bare UnicodeEncodeError."""
    with pytest.raises(ValueError, match=argument):
        api()("create_conversation", user_id="u", **{argument: value})
    assert server.requests == [] and sleeps == []


@pytest.mark.parametrize(
    "credentials",
    [{"api_key": "k\u2019ey"}, {"api_key": "k\ney"}, {"api_key": None, "bearer_token": "t\tt"}],
)
def test_credentials_the_sdk_cannot_send_are_refused_by_the_constructor(credentials: dict):
    from airia import AiriaClient

    with pytest.raises(ValueError, match=r"api_key|bearer_token"):
        AiriaClient(base_url="http://testserver/", **{"api_key": None, **credentials})


@pytest.mark.parametrize(
    ("credentials", "named"),
    [
        (
            {"api_key": "sk-live-SECRET\u200b"},
            "api_key must be ASCII text: it holds U+200B at position 14",
        ),
        ({"api_key": None, "bearer_token": "eyJ.SECRET\xa0.sig"}, "U+00A0 at position 10"),
        ({"api_key": "sk-live-SECRET\u200b", "cls": "async"}, "U+200B"),
    ],
)
def test_a_credential_that_cannot_be_sent_is_never_quoted_in_the_error(
    credentials: dict, named: str
):
    """A zero-width or no-break space pasted along with a key: the error named the
    whole key, and the CLI printed it, into terminals and CI logs."""
    from airia import AiriaAsyncClient, AiriaClient

    cls = AiriaAsyncClient if credentials.pop("cls", None) == "async" else AiriaClient
    with pytest.raises(ValueError) as raised:
        cls(base_url="http://testserver/", **{"api_key": None, **credentials})
    assert named in str(raised.value) and "SECRET" not in str(raised.value)


def test_whitespace_around_credentials_is_dropped(api, server: FakeServer):
    api(api_key=f"  {API_KEY}\n")("create_conversation", user_id="u")
    assert server.last.headers["X-API-KEY"] == API_KEY


def test_get_quotes_the_id_as_one_segment(api, server: FakeServer):
    call = api()
    for weird in ("a/b?c#d", ".."):
        with pytest.raises(NotFoundError):
            call("get_conversation", weird)
    assert server.requests[0].url.raw_path == b"/v1/Conversations/a%2Fb%3Fc%23d"
    assert server.requests[1].url.raw_path == b"/v1/Conversations/%2E%2E"


def test_update_sends_only_given_fields(api, server: FakeServer):
    call = api()
    cid = call("create_conversation", user_id="u").conversation_id
    call("update_conversation", cid, title="New")
    assert server.last.method == "PUT"
    assert server.last.url.path == f"/v1/Conversations/{cid}"
    assert json.loads(server.last.content) == {"title": "New"}

    call(
        "update_conversation",
        cid,
        title="New",
        data_source_files={"d": ["x"]},
        is_bookmarked=False,
        last_execution_status="Completed",
        last_execution_id="exec-1",
    )
    assert json.loads(server.last.content) == {
        "title": "New",
        "dataSourceFiles": {"d": ["x"]},
        "isBookmarked": False,
        "lastExecutionStatus": "Completed",
        "lastExecutionId": "exec-1",
    }


def test_feed_query_params(api, server: FakeServer):
    call = api()
    call("get_conversations_feed")
    assert dict(server.last.url.params) == {"PageNumber": "1", "PageSize": "20"}
    assert server.last.url.path == "/v1/Conversations/feed"
    call(
        "get_conversations_feed",
        page_number=3,
        page_size=5,
        sort_by="title",
        sort_direction="desc",
        filter="research",
        user_id="user_123",
    )
    assert dict(server.last.url.params) == {
        "PageNumber": "3",
        "PageSize": "5",
        "SortBy": "title",
        "SortDirection": "desc",
        "filter": "research",
        "userId": "user_123",
    }


def test_delete_returns_none_and_accepts_200(api, server: FakeServer):
    call = api()
    cid = call("create_conversation", user_id="u").conversation_id
    assert call("delete_conversation", cid) is None
    assert server.last.method == "DELETE"
    assert cid not in server.conversations
    server.script(httpx.Response(200, json={"ok": True}))
    assert call("delete_conversation", "other") is None


def test_timeout_is_applied_per_request(api, server: FakeServer):
    api(timeout=7.5)("create_conversation", user_id="u")
    assert server.last.extensions["timeout"]["read"] == 7.5


def test_feed_cursor_is_sent_instead_of_a_page_number(api, server: FakeServer):
    api()("get_conversations_feed", page_number=3, page_size=5, cursor="abc")
    params = server.requests[-1].url.params
    assert params["cursor"] == "abc" and params["PageSize"] == "5"
    assert "PageNumber" not in params
    api()("get_conversations_feed", page_number=3)
    params = server.requests[-1].url.params
    assert params["PageNumber"] == "3" and "cursor" not in params


def test_feed_next_cursor_is_parsed():
    from airia import AiriaClient

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"items": [], "totalCount": 9, "nextCursor": "n1"})

    http = httpx.Client(transport=httpx.MockTransport(answer))
    with AiriaClient(base_url="http://test", api_key=API_KEY, http_client=http) as client:
        feed = client.conversations.get_conversations_feed(page_size=2)
    assert feed.next_cursor == "n1" and feed.total_count == 9
