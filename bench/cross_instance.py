"""Event delivery across instances: a socket on instance A, messages written through B.

Two `airia-server` processes over one fresh PostgreSQL database and Redis; for each
message, the time from just before the POST on B to its `message.created` on A's socket.
Run: `.venv/bin/python bench/cross_instance.py` (PostgreSQL and Redis on localhost).
"""

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import websockets

PY = str(Path(sys.executable).parent / "airia-server")
KEY = "bench-key-" + "k" * 32


async def main(n=200):
    name = f"airia_xi_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres@127.0.0.1/{name}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRIA_")}
    env.update(
        AIRIA_DATABASE_URL=url,
        AIRIA_REDIS_URL="redis://127.0.0.1:6379/0",
        AIRIA_BOOTSTRAP_API_KEY=KEY,
        AIRIA_LOG_LEVEL="WARNING",
        AIRIA_REDIS_PREFIX=f"xi{uuid.uuid4().hex[:6]}",
    )
    procs = [
        subprocess.Popen([PY, "serve", "--port", str(p)], env=env, stderr=subprocess.DEVNULL)
        for p in (8201, 8202)
    ]
    try:
        async with httpx.AsyncClient(timeout=10, headers={"X-API-KEY": KEY}) as http:
            for port in (8201, 8202):
                for _ in range(100):
                    try:
                        if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.1)
            cid = (
                await http.post("http://127.0.0.1:8202/v1/Conversations", json={"userId": "u"})
            ).json()["conversationId"]
            ws_url = (
                await http.get(f"http://127.0.0.1:8201/v1/Conversations/{cid}/websocket-url")
            ).json()["websocketUrl"]
            lat = []
            async with websockets.connect(ws_url) as ws:
                for i in range(n):
                    t = time.perf_counter()
                    r = await http.post(
                        f"http://127.0.0.1:8202/v1/Conversations/{cid}/messages",
                        json={"message": f"m{i}"},
                    )
                    assert r.status_code == 201
                    while True:
                        ev = json.loads(await asyncio.wait_for(ws.recv(), 5))
                        if ev["type"] == "message.created" and ev["data"]["message"] == f"m{i}":
                            break
                    lat.append((time.perf_counter() - t) * 1000)
        lat.sort()
        p50, p99 = lat[n // 2], lat[max(0, int(n * 0.99) - 1)]
        print(
            f"cross-instance POST on B -> socket on A, {n} messages: "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {lat[-1]:.1f} ms"
        )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
