"""Signed, expiring WebSocket tickets."""

from __future__ import annotations

import base64
import json
import time
from types import SimpleNamespace

import pytest

from airia_server.domain import tickets
from airia_server.domain.tickets import InvalidTicket, TicketSigner

KEY = b"k" * 32
CONVERSATION = "0190f5a2-7c3e-7b1a-9d4e-2f6a8b0c1d2e"
OTHER = "0190f5a2-7c3e-7b1a-9d4e-2f6a8b0c1d2f"


def mint(signer: TicketSigner, tenant: str, conversation: str, user: str | None) -> str:
    # `mint` returns the ticket, or (ticket, expires) in newer versions: accept both.
    result = signer.mint(tenant, conversation, user)
    return result[0] if isinstance(result, tuple) else result


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def signer() -> TicketSigner:
    return TicketSigner(KEY, ttl_seconds=60)


def test_valid_ticket_round_trips(signer: TicketSigner) -> None:
    claims = signer.verify(mint(signer, "acme", CONVERSATION, "user_123"), CONVERSATION)
    assert (claims.tenant_id, claims.conversation_id, claims.user_id) == (
        "acme",
        CONVERSATION,
        "user_123",
    )


def test_ticket_for_an_api_key_has_no_user(signer: TicketSigner) -> None:
    assert signer.verify(mint(signer, "acme", CONVERSATION, None), CONVERSATION).user_id is None


def test_ticket_is_url_safe(signer: TicketSigner) -> None:
    ticket = mint(signer, "acme", CONVERSATION, "user with spaces/and?odd&chars")
    assert all(c.isalnum() or c in "-_." for c in ticket)


def test_ticket_for_another_conversation_is_refused(signer: TicketSigner) -> None:
    with pytest.raises(InvalidTicket):
        signer.verify(mint(signer, "acme", CONVERSATION, "u"), OTHER)


@pytest.mark.parametrize("position", [0, 5, -1])
def test_tampered_signature_is_refused(signer: TicketSigner, position: int) -> None:
    payload, signature = mint(signer, "acme", CONVERSATION, "u").split(".")
    chars = list(signature)
    chars[position] = "A" if chars[position] != "A" else "B"
    with pytest.raises(InvalidTicket):
        signer.verify(f"{payload}.{''.join(chars)}", CONVERSATION)


def test_tampered_payload_is_refused(signer: TicketSigner) -> None:
    payload, signature = mint(signer, "acme", CONVERSATION, "alice").split(".")
    claims = json.loads(_unb64(payload))
    claims[3] = "mallory"
    forged = _b64(json.dumps(claims).encode())
    with pytest.raises(InvalidTicket):
        signer.verify(f"{forged}.{signature}", CONVERSATION)


def test_ticket_signed_with_another_key_is_refused(signer: TicketSigner) -> None:
    other = TicketSigner(b"o" * 32, ttl_seconds=60)
    with pytest.raises(InvalidTicket):
        signer.verify(mint(other, "acme", CONVERSATION, "u"), CONVERSATION)


@pytest.mark.parametrize(
    "ticket", ["", ".", "abc", "abc.", ".abc", "a.b.c", "x" * 3000, "é.é"], ids=repr
)
def test_malformed_tickets_are_refused(signer: TicketSigner, ticket: str) -> None:
    with pytest.raises(InvalidTicket):
        signer.verify(ticket, CONVERSATION)


def test_validly_signed_garbage_is_refused(signer: TicketSigner) -> None:
    payload = _b64(b"not json at all")
    ticket = f"{payload}.{signer._sign(payload)}"
    with pytest.raises(InvalidTicket):
        signer.verify(ticket, CONVERSATION)


def test_expired_ticket_is_refused(signer: TicketSigner, monkeypatch: pytest.MonkeyPatch) -> None:
    now = 1_800_000_000.0
    monkeypatch.setattr(tickets, "time", SimpleNamespace(time=lambda: now))
    ticket = mint(signer, "acme", CONVERSATION, "u")

    now += 59
    assert signer.verify(ticket, CONVERSATION).conversation_id == CONVERSATION
    now += 2
    with pytest.raises(InvalidTicket):
        signer.verify(ticket, CONVERSATION)


def test_tickets_signed_the_earlier_way_are_still_accepted(signer: TicketSigner) -> None:
    """Tickets minted before BLAKE2s (HMAC-SHA256) stay valid until they expire, so an
    upgrade does not cut off the sockets about to connect."""
    ticket = mint(signer, "acme", CONVERSATION, "u")
    payload = ticket.partition(".")[0]
    earlier = f"{payload}.{signer._sign_v1(payload)}"
    assert earlier != ticket
    assert signer.verify(earlier, CONVERSATION).user_id == "u"
    other = TicketSigner(b"x" * 32, ttl_seconds=60)
    with pytest.raises(InvalidTicket):
        signer.verify(f"{payload}.{other._sign_v1(payload)}", CONVERSATION)


def test_a_secret_longer_than_blake2s_takes_still_signs(signer: TicketSigner) -> None:
    long = TicketSigner(b"s" * 100, ttl_seconds=60)
    ticket = mint(long, "acme", CONVERSATION, None)
    assert long.verify(ticket, CONVERSATION).user_id is None
    with pytest.raises(InvalidTicket):
        signer.verify(ticket, CONVERSATION)


@pytest.mark.parametrize(
    ("scheme", "headers", "server", "expected"),
    [
        ("http", [(b"host", b"chat.example:8080")], ("10.0.0.5", 8000), "ws://chat.example:8080"),
        ("https", [(b"host", b"chat.example")], ("10.0.0.5", 8000), "wss://chat.example"),
        # HTTP/1.0 may send no Host: the address the request came to
        ("http", [], ("10.0.0.5", 8000), "ws://10.0.0.5:8000"),
        ("http", [], ("::1", 8000), "ws://[::1]:8000"),
    ],
)
def test_websocket_url_without_a_public_url_follows_the_request(
    scheme: str, headers: list, server: tuple, expected: str
) -> None:
    """Scheme (https after a trusted proxy's X-Forwarded-Proto) and Host come from the
    request's scope."""
    from starlette.requests import Request

    from airia_server.api.deps import websocket_url
    from airia_server.domain.auth import Principal

    services = SimpleNamespace(ws_base_url=None, tickets=TicketSigner(KEY, 60))
    scope = {
        "type": "http",
        "scheme": scheme,
        "path": "/v1/Conversations",
        "query_string": b"",
        "headers": [(b"x-api-key", b"k"), *headers],
        "server": server,
        "app": SimpleNamespace(services=services),
    }
    url = websocket_url(Request(scope), Principal("t1", "api_key"), CONVERSATION)
    assert url.startswith(f"{expected}/v1/Conversations/{CONVERSATION}/ws?ticket="), url
    ticket = url.partition("ticket=")[2]
    assert services.tickets.verify(ticket, CONVERSATION).tenant_id == "t1"


def test_a_ticket_ends_with_the_bearer_token_it_was_minted_for() -> None:
    """A token with a minute left got an hour's ticket: the socket it opened outlived
    the credential by 59 minutes. The ticket now ends when the token does."""
    from starlette.requests import Request

    from airia_server.api.deps import websocket_url_and_expiry
    from airia_server.domain.auth import Principal
    from airia_server.timeutil import format_us

    signer = TicketSigner(KEY, 3600)
    services = SimpleNamespace(ws_base_url="ws://h", tickets=signer)
    request = Request({"type": "http", "headers": [], "app": SimpleNamespace(services=services)})
    soon = int(time.time()) + 60
    for principal, expiry in (
        (Principal("t1", "bearer", "u1", expires=soon + 0.5), soon),
        (Principal("t1", "bearer", "u1", expires=soon + 7200), None),
        (Principal("t1", "api_key", key_id="k1"), None),
    ):
        url, expires_at = websocket_url_and_expiry(request, principal, CONVERSATION)
        claims = signer.verify(url.partition("ticket=")[2], CONVERSATION)
        if expiry is None:
            assert claims.expires >= soon + 3600 - 60
        else:
            assert claims.expires == expiry
        assert expires_at == format_us(claims.expires * 1_000_000)
