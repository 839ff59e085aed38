"""This server's documentation: GET /openapi.json and /swagger, a Swagger UI page whose
assets come from a Python package, not a CDN (it works offline)."""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle  # type: ignore[import-untyped]
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

from tasks_server.api.errors import ApiError

_ASSETS_DIR = Path(str(swagger_ui_bundle.swagger_ui_path))
_ASSETS = frozenset(
    {"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png"}
)
# URLs are relative, so that the page also works behind a proxy under a path prefix
_SWAGGER_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Tasks Server API</title>
<link rel="stylesheet" href="swagger/swagger-ui.css">
<link rel="icon" type="image/png" href="swagger/favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui"></div>
<script src="swagger/swagger-ui-bundle.js"></script>
<script src="swagger/start.js"></script>
</body>
</html>
"""
_SWAGGER_START = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
};
"""


async def openapi_json(request: Request) -> Response:
    """The document of this app, built once for its settings when the app was made."""
    document: bytes = request.app.state.openapi
    return Response(document, media_type="application/json")


async def swagger_page(request: Request) -> Response:
    return HTMLResponse(_SWAGGER_PAGE)


async def swagger_asset(request: Request) -> Response:
    name: str = request.path_params["asset"]
    if name == "start.js":
        return Response(_SWAGGER_START, media_type="text/javascript")
    if name not in _ASSETS:
        raise ApiError(404)
    return FileResponse(_ASSETS_DIR / name, headers={"Cache-Control": "max-age=86400"})
