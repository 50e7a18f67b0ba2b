"""Signed, expiring WebSocket tickets scoped to one conversation and one caller.

A browser cannot set headers on a WebSocket, so `websocketUrl` carries its own
credential: `<payload>.<signature>`, both base64url, the signature a keyed
BLAKE2s of the payload under the server's secret (tickets signed earlier with
HMAC-SHA256 are still accepted). Download URLs (`UrlSigner`) carry HMAC-SHA256.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import msgspec

from airia_server import urlsafe
from airia_server.text import is_ascii_digits

TICKET_KEY_NAME = "ws_ticket_key"
"""The name under which the database keeps the WebSocket ticket key (`server_secret`),
when AIRIA_SECRET_KEY does not give one."""


class InvalidTicket(Exception):
    pass


class TicketClaims(msgspec.Struct, array_like=True):
    version: int
    tenant_id: str
    conversation_id: str
    user_id: str | None
    expires: int
    key_id: str | None = None
    """The API key the ticket was minted for: the socket lasts only as long as the key
    (tickets minted before this was added have none, and lasted their hour)."""


_decode_claims = msgspec.json.Decoder(TicketClaims).decode


class TicketSigner:
    def __init__(self, key: bytes, ttl_seconds: int) -> None:
        self._key = key
        # BLAKE2s takes keys of up to 32 bytes: longer secrets are hashed down.
        self._mac_key = key if len(key) <= 32 else hashlib.sha256(key).digest()
        self.ttl_seconds = ttl_seconds

    def _sign(self, payload: str) -> str:
        """BLAKE2s in its keyed mode, a MAC by design (RFC 7693) and, being CPython's
        own code rather than an OpenSSL call, a third of HMAC-SHA256's cost: a ticket
        is minted on every conversation GET."""
        return urlsafe.encode(hashlib.blake2s(payload.encode(), key=self._mac_key).digest())

    def _sign_v1(self, payload: str) -> str:
        """HMAC-SHA256, what tickets minted before BLAKE2s carry; still accepted."""
        return urlsafe.encode(hmac.digest(self._key, payload.encode(), "sha256"))

    def mint(
        self,
        tenant_id: str,
        conversation_id: str,
        user_id: str | None,
        key_id: str | None = None,
        not_after: float | None = None,
    ) -> tuple[str, int]:
        """A ticket and its expiry (Unix seconds): the TTL from now, or `not_after` (the
        expiry of the bearer token it is minted for) when that comes first."""
        expires = int(time.time()) + self.ttl_seconds
        if not_after is not None and not_after < expires:
            expires = int(not_after)
        claims = TicketClaims(1, tenant_id, conversation_id, user_id, expires, key_id)
        payload = urlsafe.encode(msgspec.json.encode(claims))
        return f"{payload}.{self._sign(payload)}", expires

    def verify(self, ticket: str, conversation_id: str) -> TicketClaims:
        payload, _, signature = ticket.partition(".")
        if not payload or not signature or len(ticket) > 2048:
            raise InvalidTicket("malformed ticket")
        given = signature.encode()
        if not hmac.compare_digest(self._sign(payload).encode(), given) and not (
            hmac.compare_digest(self._sign_v1(payload).encode(), given)
        ):
            raise InvalidTicket("bad signature")
        try:
            claims = _decode_claims(urlsafe.decode(payload))
        except (ValueError, msgspec.DecodeError) as exc:
            raise InvalidTicket("malformed ticket") from exc
        if claims.version != 1 or claims.conversation_id != conversation_id:
            raise InvalidTicket("ticket is for another conversation")
        if claims.expires < time.time():
            raise InvalidTicket("ticket expired")
        return claims


class UrlSigner:
    """Signed, expiring download URLs: `?expires=<unix>&signature=<hmac>`, no header needed."""

    def __init__(self, key: bytes, ttl_seconds: int) -> None:
        self._key = key
        self.ttl_seconds = ttl_seconds

    def _sign(self, purpose: str, expires: int) -> str:
        message = f"{purpose}:{expires}".encode()
        return urlsafe.encode(hmac.digest(self._key, message, "sha256"))

    def sign(self, purpose: str) -> tuple[int, str]:
        expires = int(time.time()) + self.ttl_seconds
        return expires, self._sign(purpose, expires)

    def verify(self, purpose: str, expires: str, signature: str) -> None:
        if not is_ascii_digits(expires) or len(expires) > 12 or len(signature) > 128:
            raise InvalidTicket("malformed signature")
        if not hmac.compare_digest(self._sign(purpose, int(expires)).encode(), signature.encode()):
            raise InvalidTicket("bad signature")
        if int(expires) < time.time():
            raise InvalidTicket("expired")
