"""Events reach sockets by both paths: written straight to an idle socket's connection
(uncompressed), and through the socket's sender (compression negotiated, or a socket
that has fallen behind); in order, each once, whichever path each event took."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from websockets.asyncio.client import connect

from .support import BOOTSTRAP_KEY, running_server

pytestmark = pytest.mark.e2e

HEADERS = {"X-API-KEY": BOOTSTRAP_KEY}


async def _receive(ws, count: int) -> list[dict]:
    frames = []
    while len(frames) < count:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame["type"] == "message.created":
            frames.append(frame)
    return frames


@pytest.mark.parametrize("compression", ["false", "true"])
def test_every_socket_gets_every_event_in_order(tmp_path, compression: str) -> None:
    with running_server(tmp_path, AIRIA_WS_COMPRESSION=compression) as server:
        http = httpx.Client(base_url=server.base_url, headers=HEADERS, timeout=10)
        created = http.post("/v1/Conversations", json={"userId": "fan"}).json()
        url, cid = created["websocketUrl"], created["conversationId"]

        async def main() -> list[list[dict]]:
            sockets = [
                await connect(url, compression="deflate" if i % 2 else None) for i in range(6)
            ]
            try:
                await asyncio.sleep(0.2)
                for i in range(30):
                    await asyncio.to_thread(
                        http.post, f"/v1/Conversations/{cid}/messages", json={"message": f"m{i}"}
                    )
                    if i == 10:
                        await asyncio.sleep(0.05)  # some events find the senders idle
                return [await _receive(ws, 30) for ws in sockets]
            finally:
                for ws in sockets:
                    await ws.close()

        received = asyncio.run(main())
        http.close()

    for frames in received:
        assert [f["data"]["message"] for f in frames] == [f"m{i}" for i in range(30)]
        sequences = [f["sequence"] for f in frames]
        assert sequences == list(range(sequences[0], sequences[0] + 30))
