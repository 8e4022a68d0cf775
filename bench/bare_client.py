"""The baseline for sending speed: a bare aiohttp loop, no limits, retries or reports.

``python -m bench.bare_client URL BODIES CONCURRENCY [uvloop]``: posts each body of BODIES
(a dry run's requests.jsonl) once, with the token from BENCH_TOKEN, with CONCURRENCY
workers on one session, and prints the seconds it took; on asyncio's own loop, or on
uvloop's (which batch-engage runs on where it is installed).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import aiohttp


async def post_all(url: str, bodies: list[bytes], concurrency: int) -> None:
    queue = iter(bodies)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency)
    ) as session:
        async def worker() -> None:
            for body in queue:
                async with session.post(url, data=body,
                                        headers={"Content-Type": "application/json"}) as r:
                    await r.read()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def main() -> None:
    url, path, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
    token = os.environ["BENCH_TOKEN"]
    with open(path, "rb") as f:
        bodies = [json.dumps({**json.loads(line)["body"], "token": token}).encode()
                  for line in f]
    start = time.perf_counter()
    if sys.argv[4:] == ["uvloop"]:
        import uvloop  # noqa: PLC0415

        uvloop.run(post_all(url, bodies, concurrency))
    else:
        asyncio.run(post_all(url, bodies, concurrency))
    print(f"{time.perf_counter() - start:.3f}")


if __name__ == "__main__":
    main()
