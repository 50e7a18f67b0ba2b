"""`/metrics`: Prometheus text, scraped while the server is under load."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from airia_server.storage.postgres import BATCHERS

from .support import LiveServer

pytestmark = pytest.mark.e2e

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})? (\S+)$')


def parse(text: str) -> dict[str, float]:
    """Every sample as `name{labels}` -> value; every line must be a comment or a sample."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not Prometheus text: {line!r}"
        samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


def requests_total(samples: dict[str, float], route: str, status: int, method: str) -> float:
    key = f'airia_http_requests_total{{method="{method}",route="{route}",status="{status}"}}'
    return samples.get(key, 0.0)


async def test_counts_and_histograms_follow_the_load(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        before = parse((await http.get("/metrics")).text)
        headers = server.headers()

        async def create() -> str:
            response = await http.post("/v1/Conversations", json={"userId": "m"}, headers=headers)
            assert response.status_code == 201
            return response.json()["conversationId"]

        scrapes: list[dict[str, float]] = []

        async def scrape_during_load() -> None:
            for _ in range(5):
                response = await http.get("/metrics")
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/plain")
                scrapes.append(parse(response.text))

        ids, _ = await asyncio.gather(
            asyncio.gather(*(create() for _ in range(60))), scrape_during_load()
        )
        for cid in ids[:20]:
            assert (await http.get(f"/v1/Conversations/{cid}", headers=headers)).status_code == 200
        assert (await http.get("/v1/Conversations/nope", headers=headers)).status_code == 404
        after = parse((await http.get("/metrics")).text)

    route = "/v1/Conversations/{conversation_id}"
    created = requests_total(after, "/v1/Conversations", 201, "POST") - requests_total(
        before, "/v1/Conversations", 201, "POST"
    )
    assert created == 60
    assert (
        requests_total(after, route, 200, "GET") - requests_total(before, route, 200, "GET") == 20
    )
    assert requests_total(after, route, 404, "GET") >= 1
    count = after[f'airia_http_request_duration_seconds_count{{method="GET",route="{route}"}}']
    inf = after[
        f'airia_http_request_duration_seconds_bucket{{method="GET",route="{route}",le="+Inf"}}'
    ]
    assert count == inf >= 21
    assert "airia_websocket_connections" in after
    assert "airia_events_delivered_total" in after
    assert any(
        name.startswith(("airia_db_write_batches_total", "airia_db_pool_connections"))
        for name in after
    )
    if "airia_db_pool_connections" in after:  # PostgreSQL: both pools are shown
        assert 1 <= after["airia_db_pool_connections"] <= 10
        assert 1 <= after["airia_db_batch_pool_connections"] <= BATCHERS
        assert 0 <= after["airia_db_batch_pool_idle_connections"] <= BATCHERS
    # Every write batch is in the batch duration histogram, once.
    batches = after["airia_db_write_batches_total"]
    assert batches - before["airia_db_write_batches_total"] >= 1
    assert after["airia_db_write_batch_duration_seconds_count"] == batches
    assert after['airia_db_write_batch_duration_seconds_bucket{le="+Inf"}'] == batches
    assert after["airia_db_write_batch_duration_seconds_sum"] == pytest.approx(
        after["airia_db_commit_seconds_total"], abs=1e-5
    )
    # Counters never go down between scrapes.
    key = 'airia_http_requests_total{method="GET",route="/metrics",status="200"}'
    seen = [s.get(key, 0.0) for s in scrapes]
    assert seen == sorted(seen)
