"""The rate limiter: when Redis does not answer it fails open, counting per instance, and
a stalled Redis is asked once, not on every request; each user counts on their own."""

from __future__ import annotations

import asyncio

import pytest

import backends
from airia_server.domain.auth import Principal
from airia_server.domain.ratelimit import RateLimited, RateLimiter

CALLER = Principal(tenant_id="t", kind="api_key", key_id="k1")


async def test_a_redis_that_does_not_answer_is_asked_once_and_the_count_goes_on_here() -> None:
    """A server that accepts and never answers (a stalled Redis, or a path that drops
    packets). The first request waits the socket timeout and is counted here; the next
    ones, within `LOCAL_SECONDS`, do not ask Redis at all; the limit holds all along."""
    connections: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limiter = RateLimiter(per_key=3, per_user=0, redis_url=f"redis://127.0.0.1:{port}/0")
    try:
        for _ in range(3):
            await limiter.check(CALLER)
        with pytest.raises(RateLimited):
            await limiter.check(CALLER)
    finally:
        await limiter.close()
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()
    assert len(connections) == 1


@pytest.mark.parametrize("in_redis", [False, True], ids=["here", "redis"])
async def test_users_whose_tenant_and_name_join_alike_have_limits_of_their_own(
    in_redis: bool,
) -> None:
    """User `b:c` of tenant `a` and user `c` of tenant `a:b` both read `a:b:c` when
    joined with ':': one of them used up the other's minute (in Redis too)."""
    if in_redis:
        backends.require(backends.redis_problem())
    redis_url = backends.REDIS_URL if in_redis else None
    first = Principal(tenant_id="a", kind="bearer", user_id="b:c")
    second = Principal(tenant_id="a:b", kind="bearer", user_id="c")
    limiter = RateLimiter(per_key=0, per_user=2, redis_url=redis_url, prefix=f"t{id(first)}")
    try:
        for _ in range(2):
            await limiter.check(first)
        with pytest.raises(RateLimited):
            await limiter.check(first)
        await limiter.check(second)  # its own minute
    finally:
        await limiter.close()
