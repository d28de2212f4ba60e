"""The OHIF viewer, served from the same origin as DICOMweb (so no CORS is involved).

The prebuilt app (``scripts/fetch-ohif``) is served as static files with the single-page
app fallback OHIF needs (any unknown path is ``index.html``); its ``app-config.js`` is made
here, pointing OHIF's data source at our ``/dicom-web`` with the options that suit it
(unquoted multipart Accept headers, bulk data URIs, frames fetched with WADO-RS).
"""

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from viewer_api.config import ApiSettings
from viewer_api.urls import base_url

log = logging.getLogger(__name__)

DEFAULT_DIR = Path(__file__).parent / "ohif"
API_PREFIXES = (
    "dicom-web",
    "wado",
    "health",
    "metrics",
    "docs",
    "redoc",
    "openapi.json",
    "api",
    "auth",
    "share",
    "static",
    "worklist",
)
"""Paths that are never the viewer's: an unknown one is a 404, not the app."""

MISSING = """<!doctype html><html lang="en"><meta charset="utf-8"><title>Dalat PACS</title>
<h1>Dalat PACS</h1><p>The OHIF viewer is not installed on this server. The archive's
administrator installs it with <code>bash scripts/fetch-ohif</code>. DICOMweb is at
<a href="/dicom-web/studies">/dicom-web</a>, the API documentation at
<a href="/docs">/docs</a>.</p></html>"""


def viewer_directory(settings: ApiSettings) -> Path | None:
    directory = settings.ohif_dir or DEFAULT_DIR
    return directory if (directory / "index.html").is_file() else None


def app_config(root: str, transfer_syntax: str | None = None) -> dict[str, Any]:
    """OHIF's configuration for a DICOMweb server at `root` (an absolute URL), asking frames
    in `transfer_syntax` (default: as stored)."""
    source: dict[str, Any] = {
        "friendlyName": "Dalat PACS",
        "name": "pacs",
        "qidoRoot": f"{root}/dicom-web",
        "wadoRoot": f"{root}/dicom-web",
        "wadoUriRoot": f"{root}/wado",
        "qidoSupportsIncludeField": True,
        "supportsReject": False,
        "imageRendering": "wadors",
        "thumbnailRendering": "wadors",
        "enableStudyLazyLoad": True,
        "supportsFuzzyMatching": False,
        "supportsWildcard": True,
        "staticWado": False,
        "singlepart": "bulkdata,video",
        "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
        "omitQuotationForMultipartRequest": True,
    }
    if transfer_syntax:
        source["requestTransferSyntaxUID"] = transfer_syntax
    return {
        "routerBasename": "/",
        "showStudyList": True,
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "investigationalUseDialog": {"option": "never"},
        "defaultDataSourceName": "pacs",
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": "pacs",
                "configuration": source,
            }
        ],
    }


def viewer_router(settings: ApiSettings) -> APIRouter:
    router = APIRouter(tags=["viewer"])

    @router.get("/app-config.js", include_in_schema=False)
    def config(request: Request) -> Response:
        root = base_url(request, settings)
        body = json.dumps(app_config(root, settings.viewer_transfer_syntax), indent=2)
        return Response(
            f"window.config = {body};\n",
            media_type="text/javascript",
            headers={"Cache-Control": "no-cache"},
        )

    return router


class ViewerFiles(StaticFiles):
    """OHIF's files; any other path that is not the API's is the app's own route. The
    files are public (they hold no patient data); the app's page itself sends a browser
    that has not signed in to the sign-in page first."""

    def __init__(self, *, directory: Path, signed_in: Callable[[Request], bool]) -> None:
        super().__init__(directory=directory, html=True)
        self.signed_in = signed_in

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path in ("", ".", "index.html"):
            return await self._page(scope)
        try:
            return await super().get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code != 404 or path.split("/", 1)[0] in API_PREFIXES:
                raise
            return await self._page(scope)

    async def _page(self, scope: Scope) -> Response:
        request = Request(scope)
        if not await run_in_threadpool(self.signed_in, request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303)
        return await super().get_response("index.html", scope)


def mount_viewer(app: FastAPI, settings: ApiSettings, signed_in: Callable[[Request], bool]) -> None:
    """Serve OHIF at ``/`` (after every API route), or a page saying how to install it."""
    directory = viewer_directory(settings)
    if directory is None:
        log.warning("The OHIF viewer is not installed (bash scripts/fetch-ohif); / explains how")

        @app.get("/", include_in_schema=False)
        def missing() -> HTMLResponse:
            return HTMLResponse(MISSING)

        return
    app.mount("/", ViewerFiles(directory=directory, signed_in=signed_in), name="viewer")
