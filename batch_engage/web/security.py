"""Who may use the page: the access key, the Host and Origin checks (jupyter-server's rules).

The key comes once in the start-up address (``?key=...``) and then lives in an HttpOnly,
SameSite=Strict cookie named for the port, so two servers on one machine keep apart. A Host
other than the listening address (or ``--public-url``'s) is refused, against DNS rebinding;
a POST from another site, or from a sandboxed ``null`` origin, is refused, against
cross-site requests. A script that sends no Origin still needs the key.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

KEY_PARAM = "key"


def cookie_name(port: int) -> str:
    return f"batch_engage_key_{port}"


def _listening(request: web.Request) -> tuple[str, int]:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not sockname:
        raise web.HTTPForbidden(text="no listening address")
    return str(sockname[0]), int(sockname[1])


def allowed_hosts(request: web.Request, public_url: str | None) -> set[str]:
    """The Host headers a browser sends for the address it opened."""
    ip, port = _listening(request)
    hosts = {f"{ip}:{port}", f"[{ip}]:{port}"}
    if ip in ("127.0.0.1", "::1"):
        hosts.add(f"localhost:{port}")
    if public_url:
        url = urlsplit(public_url)
        hosts.add(url.netloc.lower())
        if url.port is None:  # a browser leaves the default port out of Host
            hosts.add(f"{url.hostname}:{443 if url.scheme == 'https' else 80}")
    return hosts


def security_middleware(access_key: str, public_url: str | None) -> Middleware:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        hosts = allowed_hosts(request, public_url)
        if request.host.lower() not in hosts:
            raise web.HTTPForbidden(
                text=f"This page answers only at {sorted(hosts)[0]}: open the address that "
                     "batch-engage serve printed.")
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("Origin")
            # A sandboxed page sends "null", which names no host: refused as well.
            if origin is not None and urlsplit(origin).netloc.lower() not in hosts:
                raise web.HTTPForbidden(text="A request from another site was refused.")
        _, port = _listening(request)
        name = cookie_name(port)
        given = request.query.get(KEY_PARAM)
        if given is not None and hmac.compare_digest(given.encode(), access_key.encode()):
            if request.method == "GET" and not request.path.startswith("/api/"):
                # Keep the key out of the address bar, history and screenshots.
                query = {k: v for k, v in request.query.items() if k != KEY_PARAM}
                response: web.StreamResponse = web.Response(status=302, headers={
                    "Location": str(request.rel_url.with_query(query))})
            else:
                response = await handler(request)
            response.set_cookie(name, access_key, httponly=True, samesite="Strict", path="/")
            return response
        cookie = request.cookies.get(name, "")
        if not hmac.compare_digest(cookie.encode(), access_key.encode()):
            raise web.HTTPForbidden(
                text="This page needs its access key: open the address that batch-engage "
                     "serve printed when it started (it ends with ?key=...).")
        return await handler(request)

    return check
