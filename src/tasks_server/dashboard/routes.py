"""GET /dashboard: one static page and two assets shipped in the package.

A small app without a build step (plain HTML, CSS and one ES module): it reads the
same JSON API a client uses, with the owner's id and key kept in the tab's
sessionStorage, so it needs no session, cookie or template on the server, and a small
team keeps it by editing three files.
"""

from __future__ import annotations

from importlib.resources import files

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

PREFIX = "/dashboard"
_ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
# the page loads only what this server serves, and talks only to it
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {"Content-Security-Policy": POLICY, "Cache-Control": "no-cache"}


def _asset(name: str) -> bytes:
    return files(__package__ or "tasks_server.dashboard").joinpath("assets", name).read_bytes()


async def page(request: Request) -> Response:
    return Response(_asset("index.html"), media_type="text/html", headers=_HEADERS)


async def asset(request: Request) -> Response:
    name: str = request.path_params["name"]
    media = _ASSETS.get(name)
    if media is None:
        raise HTTPException(404)  # the app answers it as every 404
    return Response(_asset(name), media_type=media, headers=_HEADERS)


ROUTES = [
    Route(PREFIX, page, methods=["GET"]),
    Route(PREFIX + "/", page, methods=["GET"]),
    Route(PREFIX + "/assets/{name}", asset, methods=["GET"]),
]
