"""The page at ``/`` and the API docs at ``/docs``: files shipped in the package, nothing from a CDN.

- ``/`` is ``static/index.html`` (plain HTML, CSS, JavaScript: no build step), its assets under
  ``/static/``. It calls ``/v1/segment`` like any client.
- ``/docs`` is FastAPI's Swagger UI page (``get_swagger_ui_html``) pointed at the Swagger UI
  files of the ``swagger-ui-bundle`` package, mounted at ``/docs/assets``. That bundle is Swagger
  UI 4, which reads OpenAPI 3.0, not the 3.1 FastAPI writes, so the page loads
  ``/docs/openapi-3.0.json``: the same description in 3.0 spelling. ``/openapi.json`` stays 3.1.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"
DOCS_ASSETS = "/docs/assets"
DOCS_OPENAPI = "/docs/openapi-3.0.json"


def swagger_ui_dir() -> Path | None:
    """The packaged Swagger UI files, or None without the swagger-ui-bundle package."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return Path(str(swagger_ui_path))


def _to_openapi_30(node: Any) -> Any:
    """OpenAPI 3.1 schema spellings FastAPI uses -> 3.0 (``anyOf [X, null]`` -> nullable X,
    ``examples: [...]`` -> ``example``, ``type: [X, null]`` -> nullable X)."""
    if isinstance(node, list):
        return [_to_openapi_30(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_openapi_30(v) for k, v in node.items()}
    for key in ("anyOf", "oneOf"):
        options = out.get(key)
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [o for o in options if o != {"type": "null"}]
            del out[key]
            if len(rest) == 1:
                out.update({k: v for k, v in rest[0].items() if k not in out})
            else:
                out[key] = rest
            out["nullable"] = True
    kind = out.get("type")
    if isinstance(kind, list) and "null" in kind:
        rest = [k for k in kind if k != "null"]
        out["type"] = rest[0] if len(rest) == 1 else rest
        out["nullable"] = True
    if isinstance(out.get("examples"), list) and "schema" not in out and "value" not in out:
        examples = out.pop("examples")
        if examples:
            out.setdefault("example", examples[0])
    return out


def openapi_30(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI description in 3.0 spelling, with the bearer token as a security scheme."""
    doc = _to_openapi_30(copy.deepcopy(app.openapi()))
    doc["openapi"] = "3.0.3"
    doc.setdefault("components", {}).setdefault("securitySchemes", {})["token"] = {
        "type": "http", "scheme": "bearer", "description": "only when the server was started with a token"}
    for path, operations in doc.get("paths", {}).items():
        if path.startswith(("/v1/", "/v2/models", "/metrics")):
            for operation in operations.values():
                operation.setdefault("security", [{"token": []}, {}])
    return doc


def add_page_and_docs(app: FastAPI) -> None:
    """Mount the page, its assets and offline docs on ``app`` (created with ``docs_url=None``)."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html",
                            headers={"Cache-Control": "no-cache"})

    swagger = swagger_ui_dir()
    if swagger is not None:
        app.mount(DOCS_ASSETS, StaticFiles(directory=swagger), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        if swagger is None:
            from ..extras import install_hint
            return HTMLResponse(
                "<!doctype html><title>unetlite API docs</title><p>The interactive docs need the swagger-ui-bundle "
                f"package: <code>{install_hint('serve')}</code>. The API description is at "
                "<a href='openapi.json'>/openapi.json</a>.</p>", status_code=200)
        from fastapi.openapi.docs import get_swagger_ui_html
        return get_swagger_ui_html(openapi_url=DOCS_OPENAPI, title=f"{app.title}: API docs",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url="/static/favicon.svg",
                                   swagger_ui_parameters={"validatorUrl": None, "tryItOutEnabled": True})

    @app.get(DOCS_OPENAPI, include_in_schema=False)
    async def docs_openapi() -> JSONResponse:
        return JSONResponse(openapi_30(app))
