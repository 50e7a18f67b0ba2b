"""Fan-out through Redis, so a socket on any instance gets the events of writes on all.

Every instance publishes each committed event to one Redis channel and
listens on it; each delivers what it hears to its own sockets. Redis keeps
nothing here: the database's event log is the record. When Redis goes away,
writes go on (each instance delivers its own events locally and `/readyz`
says Redis is down); when it comes back, every local socket rereads the
stored log from its last sequence, so nothing is lost.

Redis can also stall rather than go: paused, overloaded, or behind a path that
drops packets without closing the connection. Nothing raises then, so both
connections watch the clock. A PUBLISH gets `PUBLISH_TIMEOUT`; one that does
not go through marks Redis away for publishing, and a probe tries again every
`PROBE_EVERY` seconds until one does, telling the other instances to reread
what they missed. The listening connection, idle between events, PINGs Redis
when it has heard nothing for `PING_EVERY` seconds and counts as dead after
`SILENT_LIMIT` seconds of silence: it reconnects as after an error.

One channel for all conversations keeps subscription handling trivial and
ordering simple; every instance sees every event, which suits tens of
thousands of events per second. Sharding the channel by conversation is the
step after that.

Events go out in batches: those published while a PUBLISH is on its way wait
for it and go together in the next one, as one message holding a list. A
round trip to Redis and the parsing of a message each cost about as much as
the rest of a write request; this way an instance pays them once per batch,
on the publishing side and on every listening one. A publish still returns
only once its event is in Redis (or, Redis being away, delivered locally).
A listener reads both a list and a single event, the form older versions
publish.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging

import msgspec
import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from airia_server.realtime.hub import LocalHub
from airia_server.storage.base import EventRecord
from airia_server.storage.batching import BatchQueue

log = logging.getLogger("airia_server.realtime")
_encode = msgspec.msgpack.encode
_decode = msgspec.msgpack.Decoder(list[EventRecord] | EventRecord).decode
MAX_BATCH = 256
"""Events in one Redis message, at most."""
PUBLISH_TIMEOUT = 1.0
"""Seconds a PUBLISH may take: well under a millisecond when Redis is there."""
PROBE_EVERY = 1.0
"""Seconds between tries to publish again after a PUBLISH failed."""
PING_EVERY = 2.0
"""Seconds of silence on the listening connection before it PINGs Redis."""
SILENT_LIMIT = 5.0
"""Seconds without a word from Redis (an event, a reply to a PING, the confirmation
of a SUBSCRIBE) after which the listening connection counts as dead."""


class RedisHub(LocalHub):
    def __init__(self, url: str, queue_size: int = 1000, prefix: str = "airia") -> None:
        super().__init__(queue_size)
        self._channel = f"{prefix}:events"
        self._control = f"{prefix}:control"
        self._redis = redis.from_url(
            url, socket_connect_timeout=1.0, socket_timeout=PUBLISH_TIMEOUT
        )
        # The listening connection idles between events: no read timeout; `_listen`
        # PINGs and watches for silence itself.
        self._listen_client = redis.from_url(url, socket_connect_timeout=1.0)
        self._listener: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._listening = False
        """Subscribed, and Redis has been heard from within `SILENT_LIMIT`."""
        self._publishing = True
        """The last PUBLISH went through (or none has failed since the probe's did)."""
        self._missed_by_others = False
        """Events went out only locally while Redis was away."""
        self._outbox = _Outbox(self)

    @property
    def healthy(self) -> bool:
        return self._listening and self._publishing

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="redis-hub")
        # Start serving even if Redis is away: it is not needed to answer requests.
        try:
            await asyncio.wait_for(self._subscribed.wait(), 5.0)
        except asyncio.TimeoutError:  # not yet the built-in TimeoutError before 3.11
            log.warning("Redis is not reachable yet; events stay on this instance until it is")

    async def close(self) -> None:
        await self._outbox.close()
        for task in (self._listener, self._probe):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        await self._redis.aclose()
        await self._listen_client.aclose()

    async def publish(self, event: EventRecord) -> None:
        if self._outbox.closed or (not self.healthy and not self._outbox.busy):
            self._deliver_here([event])
            return
        # Behind the events already on their way, even if Redis has just gone: the
        # sockets here get every conversation's events in order either way.
        await self._outbox.submit(event)

    async def _send(self, events: list[EventRecord]) -> None:
        """One batch: to Redis, where our own listener delivers it locally, as every
        instance's does; or, Redis being away, straight to the sockets here."""
        if self.healthy:
            if await self._publish(self._channel, _encode(events)):
                return
            self._lost_publishing()
        self._deliver_here(events)

    def _deliver_here(self, events: list[EventRecord]) -> None:
        if events:
            self._missed_by_others = True
        for event in events:
            self.deliver(event)

    async def _publish(self, channel: str, payload: bytes) -> bool:
        # A second try after a broken connection (a pooled one is stale after a
        # restart of Redis), not after a timeout: Redis stalled, and waiting again
        # would hold every write behind this one as long again.
        for attempt in range(2):
            try:
                await self._redis.publish(channel, payload)
                return True
            except RedisTimeoutError as exc:
                failure: BaseException = exc
                break
            except (RedisError, OSError) as exc:
                failure = exc
                if attempt:
                    break
        log.warning("could not publish to Redis (%s)", failure)
        return False

    def _lost_publishing(self) -> None:
        """A PUBLISH failed: events go out locally, `/readyz` says so, and a probe
        tries again until one goes through."""
        if self._publishing:
            log.warning("delivering events locally until a PUBLISH to Redis goes through")
        self._publishing = False
        if self._probe is None or self._probe.done():
            # In a context of its own: not the request whose event found Redis away,
            # which its log lines would otherwise name (its correlation id) for good.
            self._probe = contextvars.Context().run(
                asyncio.create_task, self._probe_publishing(), name="redis-probe"
            )

    async def _probe_publishing(self) -> None:
        """Until a PUBLISH goes through, try one every `PROBE_EVERY` seconds: the
        "resync" notice the other instances need, to reread what went out only here."""
        while True:
            await asyncio.sleep(PROBE_EVERY)
            self._missed_by_others = False
            if not await self._publish(self._control, b"resync"):
                self._missed_by_others = True
                continue
            if not self._publishing:
                log.info("publishing to Redis again")
                self._publishing = True
            # Events went out only here while the notice was on its way: another one
            # (or, the listener being down, the one it sends when it is back).
            if not (self._missed_by_others and self._listening):
                return

    def _set_unhealthy(self, exc: BaseException) -> None:
        if self._listening:
            log.warning("lost Redis (%s); delivering events locally until it is back", exc)
        self._listening = False

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.1
        while True:
            pubsub = self._listen_client.pubsub()
            try:
                await pubsub.subscribe(self._channel, self._control)
                confirmed = 0
                heard = pinged = loop.time()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    now = loop.time()
                    if message is None:
                        # Silence: idle, or a Redis that stalled without closing.
                        if now - heard > SILENT_LIMIT:
                            raise RedisConnectionError(
                                f"no word from Redis in {SILENT_LIMIT:.0f} s"
                            )
                        if confirmed == 2 and min(now - heard, now - pinged) >= PING_EVERY:
                            pinged = now
                            await asyncio.wait_for(pubsub.ping(), PING_EVERY)
                        continue
                    heard = now
                    if message["type"] == "pong":
                        continue
                    if message["type"] == "subscribe":
                        confirmed += 1
                        if confirmed < 2:
                            continue
                        # Confirmed: from here on no publish can pass us by.
                        if not self._listening:
                            log.info("Redis fan-out is up")
                            self._listening = True
                            # What was published while we were away is in the stored log;
                            # and what we published only locally meanwhile, the other
                            # instances missed: tell them to reread it too.
                            self.resync_all()
                            if self._missed_by_others:
                                self._missed_by_others = False
                                await self._announce_resync()
                        self._subscribed.set()
                        delay = 0.1
                        continue
                    if _text(message.get("channel")) == self._control:
                        self.resync_all()
                        continue
                    self._on_message(message)
            except asyncio.CancelledError:
                await pubsub.aclose()
                raise
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                self._set_unhealthy(exc)
                await pubsub.aclose()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _announce_resync(self) -> None:
        if not await self._publish(self._control, b"resync"):
            self._missed_by_others = True
            self._lost_publishing()  # whose probe announces it

    def _on_message(self, message: dict) -> None:
        if message.get("type") != "message":
            return
        try:
            events = _decode(message["data"])
        except msgspec.DecodeError:
            log.warning("ignored an undecodable event on %s", self._channel)
            return
        if isinstance(events, EventRecord):  # from an older version: one event
            self.deliver(events)
            return
        for event in events:
            self.deliver(event)


class _Outbox(BatchQueue[EventRecord, None]):
    """Events waiting for their PUBLISH, sent a batch at a time (`RedisHub._send`)."""

    closed_message = "the event fan-out is closed"

    def __init__(self, hub: RedisHub) -> None:
        super().__init__(MAX_BATCH)
        self._hub = hub

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._next_batch()
                await self._hub._send([event for event, _ in batch])
                self._settle([(sent, None, None) for _, sent in batch])
        finally:
            # Cut short (shut down) half-way: what did not go out is delivered here.
            left = [(e, sent) for e, sent in self._in_flight + self._pending if not sent.done()]
            self._pending.clear()
            self._hub._deliver_here([event for event, _ in left])
            self._settle([(sent, None, None) for _, sent in left])


def _text(value: object) -> str | None:
    return value.decode() if isinstance(value, bytes) else value  # type: ignore[return-value]
