"""``batch-engage serve``: the web page for marketers, over the same library run as the CLI.

The library never imports this package; this package imports the library.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from urllib.parse import urlsplit

from aiohttp import web

from .app import ServeConfig, make_app

__all__ = ["ServeConfig", "make_app", "serve"]


def start_url(host: str, port: int, key: str, public_url: str | None) -> str:
    if public_url:
        return f"{public_url.rstrip('/')}/?key={key}"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?key={key}"


async def _serve(config: ServeConfig, host: str, port: int,
                 on_ready: Callable[[str], None]) -> None:
    app = make_app(config)
    runner = web.AppRunner(app, access_log=None)  # the access log would show ?key=
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    on_ready(start_url(host, bound, config.access_key, config.public_url))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        # Runs stop as Ctrl-C stops a CLI run: requests on the wire finish, Resume later.
        await runner.cleanup()


def serve(config: ServeConfig, host: str, port: int, on_ready: Callable[[str], None]) -> None:
    """Serve until Ctrl-C or SIGTERM. Files the server writes are the user's alone."""
    os.umask(0o077)
    if config.public_url and not urlsplit(config.public_url).hostname:
        raise ValueError(f"--public-url {config.public_url!r} is not a web address")
    asyncio.run(_serve(config, host, port, on_ready))
