"""The gateway's plain HTTP: the desktop and console pages, their static files, /healthz and
/metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from router.gateway import metrics as gm
from router.gateway.hub import Hub

STATIC = resources.files("router.gateway") / "static"
_STATIC_TYPES = {"js": "text/javascript", "css": "text/css", "html": "text/html",
                 "svg": "image/svg+xml"}
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token may sit in the page's query string
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; "
                               "style-src 'self'; script-src 'self'; frame-ancestors 'none'",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_routes(app: web.Application, hub: Hub) -> None:
    app.router.add_get("/", _page("desktop.html"))
    app.router.add_get("/supervisor", _page("supervisor.html"))
    app.router.add_get("/static/{name}", _static)
    app.router.add_get("/favicon.ico", _favicon)
    app.router.add_get("/metrics", _metrics)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "agents": len(hub.agents),
                                  "supervisors": len(hub.supervisors)})

    app.router.add_get("/healthz", healthz)


def _page(name: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=(STATIC / name).read_bytes(), content_type="text/html",
                            charset="utf-8", headers=_SECURITY_HEADERS)
    return handler


async def _static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    kind = _STATIC_TYPES.get(name.rpartition(".")[2])
    if kind is None or "/" in name or name.startswith("."):
        raise web.HTTPNotFound()
    path = STATIC / name
    if not path.is_file():
        raise web.HTTPNotFound()
    return web.Response(body=path.read_bytes(), content_type=kind, charset="utf-8",
                        headers={"Cache-Control": "no-cache"})


async def _favicon(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=gm.exposition(), content_type=CONTENT_TYPE_LATEST.split(";")[0])
