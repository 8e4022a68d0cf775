"""The baselines for sending speed: a bare aiohttp loop, no limits, retries or reports.

``python -m bench.bare_client URL BODIES CONCURRENCY [asyncio|uvloop [MARKS]]``: posts each
body of BODIES (a dry run's requests.jsonl) once, with the token from BENCH_TOKEN, with
CONCURRENCY workers on one session, and prints the seconds it took; on asyncio's own loop,
or on uvloop's (which batch-engage runs on where it is installed).

With MARKS, a file path, each request first waits for a line naming it to be on disk
there, and each answer's line rides along with the next sync: the least that SPEC's rule
for a kill or a power loss (nothing engaged twice, at most ``--concurrency`` rows of
unknown fate) costs any client. The marks of one loop iteration share one ``fdatasync``,
made in the loop's thread, which measured faster here than a thread or a process for it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import aiohttp


class Marks:
    """Lines appended to a file; a group commit per loop iteration, as batch-engage's
    journal makes them."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        self._lines: list[bytes] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._soon = False

    async def sending(self, index: int) -> None:
        self._lines.append(b"%d sending\n" % index)
        durable = asyncio.get_running_loop().create_future()
        self._waiters.append(durable)
        if not self._soon:
            self._soon = True
            asyncio.get_running_loop().call_soon(self._sync)
        await durable

    def answered(self, index: int) -> None:
        self._lines.append(b"%d ok\n" % index)

    def _sync(self) -> None:
        self._soon = False
        lines, self._lines = self._lines, []
        waiters, self._waiters = self._waiters, []
        os.write(self._fd, b"".join(lines))
        os.fdatasync(self._fd)
        for waiter in waiters:
            waiter.set_result(None)

    def close(self) -> None:
        os.write(self._fd, b"".join(self._lines))
        os.fdatasync(self._fd)
        os.close(self._fd)


async def post_all(url: str, bodies: list[bytes], concurrency: int, marks: Marks | None
                   ) -> None:
    queue = iter(enumerate(bodies))
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency)
    ) as session:
        async def worker() -> None:
            for index, body in queue:
                if marks is not None:
                    await marks.sending(index)
                async with session.post(url, data=body,
                                        headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                if marks is not None:
                    marks.answered(index)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def main() -> None:
    url, path, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
    loop = sys.argv[4] if len(sys.argv) > 4 else "asyncio"
    token = os.environ["BENCH_TOKEN"]
    with open(path, "rb") as f:
        bodies = [json.dumps({**json.loads(line)["body"], "token": token}).encode()
                  for line in f]
    marks = Marks(sys.argv[5]) if len(sys.argv) > 5 else None
    start = time.perf_counter()
    if loop == "uvloop":
        import uvloop  # noqa: PLC0415

        uvloop.run(post_all(url, bodies, concurrency, marks))
    else:
        asyncio.run(post_all(url, bodies, concurrency, marks))
    if marks is not None:
        marks.close()
    print(f"{time.perf_counter() - start:.3f}")


if __name__ == "__main__":
    main()
