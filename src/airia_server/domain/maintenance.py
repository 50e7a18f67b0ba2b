"""Housekeeping every instance runs in the background; each step is safe to run on many."""

from __future__ import annotations

import asyncio
import logging

from airia_server.domain import lifecycle
from airia_server.domain.attachments import AttachmentService
from airia_server.realtime.hub import LocalHub
from airia_server.storage.base import Store
from airia_server.storage.outages import outage_of
from airia_server.timeutil import format_us, now_us

log = logging.getLogger("airia_server.maintenance")

IDEMPOTENCY_KEY_TTL_SECONDS = 24 * 3600


async def run_once(
    store: Store, attachments: AttachmentService, hub: LocalHub, retention_days: int
) -> None:
    await lifecycle.apply_retention(store, hub, retention_days)
    # Blobs a crash left unreferenced between a delete and its cleanup.
    await attachments.sweep()
    cutoff = format_us(now_us() - IDEMPOTENCY_KEY_TTL_SECONDS * 1_000_000)
    purged = await store.purge_idempotency_keys(cutoff)
    if purged:
        log.info("forgot %d idempotency keys older than 24 hours", purged)


async def run_forever(
    store: Store,
    attachments: AttachmentService,
    hub: LocalHub,
    retention_days: int,
    interval: float,
) -> None:
    while True:
        try:
            await run_once(store, attachments, hub, retention_days)
        except Exception as exc:  # retried on the next round
            if outage_of(exc) is not None:  # the database is away: said once a round
                log.warning("maintenance failed: %s: %s", type(exc).__name__, str(exc)[:300])
            else:
                log.exception("maintenance failed")
        await asyncio.sleep(interval)
