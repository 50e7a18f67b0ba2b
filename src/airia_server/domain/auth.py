"""Who is calling: API keys (tenant-wide) and bearer JWTs (one user of one tenant)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Literal

import jwt

from airia_server.config import Settings
from airia_server.errors import Unauthorized
from airia_server.ids import new_id
from airia_server.storage.base import ApiKeyRecord, Store
from airia_server.timeutil import utcnow_iso

DEFAULT_TENANT = "default"
API_KEY_PREFIX = "ak_"
_TOKEN_CACHE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str
    kind: Literal["api_key", "bearer"]
    user_id: str | None = None
    """The JWT's `sub`; None for an API key, which acts for any user of its tenant."""
    key_id: str | None = None
    expires: float | None = None
    """The bearer token's `exp` (Unix seconds): a WebSocket ticket minted for it ends
    then too, not later. None for an API key, which lasts until it is revoked."""

    @property
    def is_api_key(self) -> bool:
        return self.kind == "api_key"


def user_key(tenant_id: str, user_id: str) -> str:
    """One user of one tenant as a single string (a counter's key), never the same for
    two: the tenant's length leads, so a ':' in either part cannot make `a` and `b:c`
    read as `a:b` and `c`."""
    return f"{len(tenant_id)}:{tenant_id}:{user_id}"


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_api_key() -> str:
    """A new key: 32 random bytes, base64url, behind a recognisable prefix."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


async def create_api_key(
    store: Store, tenant_id: str, name: str | None
) -> tuple[ApiKeyRecord, str]:
    """Store a new key's hash and return the key itself, which is never stored."""
    key = generate_api_key()
    record = ApiKeyRecord(
        id=new_id(),
        tenant_id=tenant_id,
        name=name,
        prefix=key[:10],
        created_at=utcnow_iso(),
        revoked_at=None,
    )
    await store.create_api_key(record, hash_api_key(key))
    return record, key


BOOTSTRAP_KEY_ID = "bootstrap"
"""The key id of AIRIA_BOOTSTRAP_API_KEY, which is no row of the database."""

MAX_NAME_LENGTH = 255
"""The longest user or tenant a token may name: as long as a `userId` in a body."""


def _is_name(value: object) -> bool:
    # No database stores NUL in text (PostgreSQL would refuse the query), nor half of
    # a surrogate pair (it is not UTF-8).
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_LENGTH or "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


class Authenticator:
    def __init__(self, settings: Settings, store: Store) -> None:
        self._store = store
        bootstrap = settings.bootstrap_api_key
        self._bootstrap_hash = hash_api_key(bootstrap.get_secret_value()) if bootstrap else None
        self._jwt_key = settings.jwt_verification_key()
        self._jwt_algorithm = settings.jwt_algorithm
        self._jwt_audience = settings.jwt_audience
        self._jwt_issuer = settings.jwt_issuer
        # Verified tokens, until they expire: verification is a pure function of
        # the token and the key, and a JWT cannot be revoked before its `exp`.
        self._token_cache: dict[str, tuple[Principal, float]] = {}
        # Valid API keys, for AIRIA_API_KEY_CACHE_SECONDS (off by default): a revocation
        # takes effect within that time instead of at once.
        self._key_cache: dict[str, tuple[Principal, float]] = {}
        self._digests: dict[str, str] = {}
        self.key_cache_seconds = settings.api_key_cache_seconds

    async def authenticate(self, api_key: str | None, authorization: str | None) -> Principal:
        if api_key is not None:
            # Whitespace around a field value is not part of it (RFC 9110, 5.5).
            return await self._from_api_key(api_key.strip(" \t"))
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized(
                    "Invalid authorization header",
                    "Use 'Authorization: Bearer <token>' or 'X-API-KEY: <key>'",
                )
            return self._from_token(token.strip())
        raise Unauthorized(
            "Missing credentials", "Send 'X-API-KEY: <key>' or 'Authorization: Bearer <token>'"
        )

    async def _from_api_key(self, key: str) -> Principal:
        # The hash of a key is a pure function of it: remembered (not the verdict,
        # which is looked up every time unless AIRIA_API_KEY_CACHE_SECONDS says so).
        digest = self._digests.get(key)
        if digest is None:
            if len(self._digests) >= _TOKEN_CACHE_MAX:
                self._digests.clear()
            digest = self._digests[key] = hash_api_key(key)
        if self._bootstrap_hash is not None and hmac.compare_digest(digest, self._bootstrap_hash):
            return Principal(tenant_id=DEFAULT_TENANT, kind="api_key", key_id=BOOTSTRAP_KEY_ID)
        now = time.monotonic()
        if self.key_cache_seconds:
            cached = self._key_cache.get(digest)
            if cached is not None and cached[1] > now:
                return cached[0]
        # The lookup is by hash, so timing reveals nothing about stored keys.
        record = await self._store.find_api_key(digest)
        if record is None or record.revoked_at is not None:
            self._key_cache.pop(digest, None)
            raise Unauthorized("Invalid API key", "The API key is not valid")
        principal = Principal(tenant_id=record.tenant_id, kind="api_key", key_id=record.id)
        if self.key_cache_seconds:
            if len(self._key_cache) >= _TOKEN_CACHE_MAX:
                self._key_cache.clear()
            self._key_cache[digest] = (principal, now + self.key_cache_seconds)
        return principal

    async def key_active(self, key_id: str) -> bool:
        """Whether the API key with this id may still be used: a WebSocket ticket
        minted for a key is only as good as the key."""
        if key_id == BOOTSTRAP_KEY_ID:
            return self._bootstrap_hash is not None
        return await self._store.api_key_active(key_id)

    def _from_token(self, token: str) -> Principal:
        cached = self._token_cache.get(token)
        now = time.time()
        if cached is not None and cached[1] > now:
            return cached[0]
        if self._jwt_key is None:
            raise Unauthorized(
                "Bearer tokens are not enabled",
                "This server has no JWT key configured (AIRIA_JWT_SECRET)",
            )
        try:
            claims = jwt.decode(
                token,
                self._jwt_key,
                algorithms=[self._jwt_algorithm],
                audience=self._jwt_audience,
                issuer=self._jwt_issuer,
                options={"require": ["exp", "sub"], "verify_aud": self._jwt_audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("Token expired", "The bearer token has expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("Invalid token", "The bearer token is not valid") from exc
        sub, tenant = claims.get("sub"), claims.get("tenant", DEFAULT_TENANT)
        if not _is_name(sub) or not _is_name(tenant):
            raise Unauthorized(
                "Invalid token",
                "The token's 'sub' and 'tenant' must be strings of 1 to"
                f" {MAX_NAME_LENGTH} characters, without NUL",
            )
        try:
            expires = float(claims["exp"])  # PyJWT checked it is a number in the future
        except (OverflowError, TypeError, ValueError):
            raise Unauthorized("Invalid token", "The token's 'exp' is out of range") from None
        principal = Principal(tenant_id=tenant, kind="bearer", user_id=sub, expires=expires)
        if len(self._token_cache) >= _TOKEN_CACHE_MAX:
            self._token_cache.clear()
        self._token_cache[token] = (principal, expires)
        return principal


def mint_token(settings: Settings, sub: str, tenant: str, ttl_seconds: int) -> str:
    """A development token signed with `AIRIA_JWT_SECRET`."""
    if not settings.jwt_algorithm.startswith("HS") or settings.jwt_secret is None:
        raise ValueError("minting needs AIRIA_JWT_SECRET (and an HS* AIRIA_JWT_ALGORITHM)")
    if not _is_name(sub) or not _is_name(tenant):
        raise ValueError(f"--sub and --tenant must be 1 to {MAX_NAME_LENGTH} characters")
    if ttl_seconds <= 0:
        raise ValueError("--ttl must be a positive number of seconds")
    now = int(time.time())
    claims = {"sub": sub, "tenant": tenant, "iat": now, "exp": now + ttl_seconds}
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(
        claims, settings.jwt_secret.get_secret_value(), algorithm=settings.jwt_algorithm
    )
