"""Requests per minute per API key and per user: fixed one-minute windows, counted in
Redis when it is configured (so every instance shares the count) and in this process
otherwise, or while Redis is away: after a command to Redis fails (0.5 s at most), the
next `LOCAL_SECONDS` count here without asking it, so a stalled Redis costs one request
that half second, not every request."""

from __future__ import annotations

import logging
import time

import redis.asyncio as redis
from redis.exceptions import RedisError

from airia_server.domain.auth import Principal, user_key
from airia_server.errors import AppError

log = logging.getLogger("airia_server.ratelimit")
LOCAL_SECONDS = 5.0


class RateLimited(AppError):
    status = 429
    title = "Too Many Requests"


class RateLimiter:
    def __init__(
        self, per_key: int, per_user: int, redis_url: str | None = None, prefix: str = "airia"
    ) -> None:
        self.per_key = per_key
        self.per_user = per_user
        self._prefix = prefix
        self._redis = (
            redis.from_url(redis_url, socket_connect_timeout=0.5, socket_timeout=0.5)
            if redis_url and (per_key or per_user)
            else None
        )
        self._local: dict[str, int] = {}
        self._window = 0
        self._redis_after = 0.0
        """`time.monotonic()` before which Redis is not asked (it failed just now)."""

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def check(self, principal: Principal) -> None:
        if principal.is_api_key:
            limit, bucket = self.per_key, f"key:{principal.key_id}"
        else:
            user = user_key(principal.tenant_id, principal.user_id)  # type: ignore[arg-type]
            limit, bucket = self.per_user, f"user:{user}"
        if limit <= 0:
            return
        now = time.time()
        window = int(now // 60)
        count = await self._count(bucket, window)
        if count > limit:
            retry = max(1, int(60 - now % 60) + 1)
            error = RateLimited(
                "Rate limit exceeded",
                f"At most {limit} requests per minute; retry in {retry} s",
            )
            error.headers["Retry-After"] = str(retry)
            raise error

    async def _count(self, bucket: str, window: int) -> int:
        if self._redis is not None and time.monotonic() >= self._redis_after:
            key = f"{self._prefix}:ratelimit:{bucket}:{window}"
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.incr(key)
                    pipe.expire(key, 120)
                    count, _ = await pipe.execute()
                if self._redis_after:
                    log.info("rate limits counted in Redis again")
                    self._redis_after = 0.0
                return int(count)
            except (RedisError, OSError) as exc:
                # Count here until Redis is back: fail open, per instance.
                if not self._redis_after:
                    log.warning("rate limits counted per instance: Redis failed (%s)", exc)
                self._redis_after = time.monotonic() + LOCAL_SECONDS
        if window != self._window:
            self._window, self._local = window, {}
        self._local[bucket] = self._local.get(bucket, 0) + 1
        return self._local[bucket]
