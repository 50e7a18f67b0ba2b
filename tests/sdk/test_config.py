"""Configuration: argument, then environment, then default."""

import httpx
import pytest

from airia import AiriaAsyncClient, AiriaClient
from airia._constants import DEFAULT_BASE_URL

from .conftest import FakeServer


@pytest.mark.parametrize("cls", [AiriaClient, AiriaAsyncClient])
def test_no_credentials_is_a_value_error(cls):
    with pytest.raises(ValueError, match="Authentication required"):
        cls()


@pytest.mark.parametrize("cls", [AiriaClient, AiriaAsyncClient])
def test_both_credentials_is_a_value_error(cls):
    with pytest.raises(ValueError, match="both api_key and bearer_token"):
        cls(api_key="k", bearer_token="t")


def test_env_key_used_when_nothing_explicit(monkeypatch):
    monkeypatch.setenv("AIRIA_API_KEY", "env-key")
    client = AiriaClient()
    assert (client.api_key, client.bearer_token) == ("env-key", None)


def test_explicit_key_beats_env(monkeypatch):
    monkeypatch.setenv("AIRIA_API_KEY", "env-key")
    assert AiriaClient(api_key="arg-key").api_key == "arg-key"


@pytest.mark.parametrize("cls", [AiriaClient, AiriaAsyncClient])
def test_the_documentations_placeholder_key_stands_for_the_env_key(monkeypatch, cls):
    """`AiriaClient(api_key="your_api_key")`, as every documented example has it, runs
    as written against a server whose real key is in AIRIA_API_KEY."""
    assert cls(api_key="your_api_key").api_key == "your_api_key"  # nothing in the env
    monkeypatch.setenv("AIRIA_API_KEY", "env-key")
    assert cls(api_key="your_api_key").api_key == "env-key"
    assert cls(api_key="your_api_key_2").api_key == "your_api_key_2"


def test_env_key_ignored_when_bearer_token_given(monkeypatch):
    monkeypatch.setenv("AIRIA_API_KEY", "env-key")
    client = AiriaClient.with_bearer_token("tok")
    assert (client.api_key, client.bearer_token) == (None, "tok")


@pytest.mark.parametrize("cls", [AiriaClient, AiriaAsyncClient])
def test_with_bearer_token_passes_settings(cls):
    client = cls.with_bearer_token(bearer_token="tok", base_url="http://h:1", timeout=5.0)
    assert client.bearer_token == "tok"
    assert client.base_url == "http://h:1/"
    assert client.timeout == 5.0


def test_base_url_resolution(monkeypatch):
    assert AiriaClient(api_key="k").base_url == DEFAULT_BASE_URL == "http://localhost:8000/"
    monkeypatch.setenv("AIRIA_BASE_URL", "https://env.example/api")
    assert AiriaClient(api_key="k").base_url == "https://env.example/api/"
    assert AiriaClient(api_key="k", base_url="https://arg.example").base_url == (
        "https://arg.example/"
    )


@pytest.mark.parametrize("cls", [AiriaClient, AiriaAsyncClient])
@pytest.mark.parametrize("url", ["localhost:18100", "127.0.0.1:18100/api", "ftp://h/", "http://"])
def test_a_base_url_without_scheme_or_host_is_refused_at_construction(cls, url, monkeypatch):
    """`localhost:18100` reads as scheme `localhost`: every call would fail, after its
    retries, naming a URL with no host. Refused at once, the URL named."""
    with pytest.raises(ValueError, match="needs http:// or https://") as caught:
        cls(api_key="k", base_url=url)
    assert f"base_url {url!r}" in str(caught.value)
    monkeypatch.setenv("AIRIA_BASE_URL", url)
    with pytest.raises(ValueError, match=f"AIRIA_BASE_URL {url!r}"):
        cls(api_key="k")


@pytest.mark.parametrize("cls", [AiriaClient, AiriaAsyncClient])
@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://h:abc/", "Port could not be cast"),
        ("http://h:99999/", "Port out of range"),
        ("http://[::1/", "Invalid IPv6 URL"),
    ],
)
def test_a_base_url_with_a_bad_port_or_address_is_refused_at_construction(cls, url, says):
    """A port that is not a number was httpx's InvalidURL at the first call (a traceback
    from the CLI); one out of range failed to connect, naming no cause."""
    with pytest.raises(ValueError, match=says) as caught:
        cls(api_key="k", base_url=url)
    assert str(caught.value).startswith(f"base_url {url!r} is not a usable base URL: ")


def test_base_url_with_path_prefix_is_kept(server: FakeServer):
    http = httpx.Client(transport=httpx.MockTransport(server))
    client = AiriaClient(base_url="http://testserver/airia", api_key="k", http_client=http)
    server.script(httpx.Response(204))
    client.delete_conversation("abc")
    assert str(server.last.url) == "http://testserver/airia/v1/Conversations/abc"


def test_repr_shows_no_secret():
    assert "secret" not in repr(AiriaClient(api_key="secret"))


def test_close_leaves_injected_http_client_open(server: FakeServer):
    http = httpx.Client(transport=httpx.MockTransport(server))
    with AiriaClient(api_key="k", http_client=http):
        pass
    assert not http.is_closed
    http.close()


def test_close_closes_own_http_client():
    client = AiriaClient(api_key="k")
    client.close()
    assert client._http.is_closed


async def test_async_close_closes_own_http_client():
    client = AiriaAsyncClient(api_key="k")
    await client.close()
    assert client._http.is_closed


def test_an_http_client_of_the_other_kind_is_a_type_error_at_construction():
    """It was taken, and the first call failed inside httpx ("'coroutine' object has
    no attribute 'is_success'", or a Response that cannot be awaited)."""
    import httpx

    from airia import AiriaAsyncClient, AiriaClient

    with httpx.Client() as sync_http:
        with pytest.raises(TypeError, match="AiriaClient"):
            AiriaAsyncClient(api_key="k", base_url="http://testserver/", http_client=sync_http)
    with pytest.raises(TypeError, match="AiriaAsyncClient"):
        AiriaClient(api_key="k", base_url="http://testserver/", http_client=httpx.AsyncClient())


@pytest.mark.parametrize(
    "settings",
    [
        {"timeout": 0},
        {"timeout": -5},
        {"timeout": float("nan")},
        {"timeout": float("inf")},
        {"timeout": 2**31},
        {"timeout": "30"},
        {"timeout": None},
        {"max_retries": -1},
        {"max_retries": 1.5},
        {"max_retries": True},
    ],
    ids=repr,
)
@pytest.mark.parametrize("cls", ["sync", "async"])
def test_a_timeout_or_retry_count_that_cannot_work_is_a_value_error_at_construction(
    settings: dict, cls: str
):
    """Taken as they were, `timeout=0` failed every call as a connection error,
    `timeout=-5` inside httpx at the first call, and `max_retries=-1` was read as 0."""
    from airia import AiriaAsyncClient, AiriaClient

    client_class = AiriaClient if cls == "sync" else AiriaAsyncClient
    with pytest.raises(ValueError, match=next(iter(settings))):
        client_class(api_key="k", base_url="http://testserver/", **settings)
