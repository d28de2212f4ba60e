"""The HTTP API. For now: health and Prometheus metrics (DICOMweb and the viewer follow)."""

import os

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from storage import Archive


def create_app(archive: Archive) -> FastAPI:
    app = FastAPI(
        title="Dalat PACS",
        summary="Provincial medical imaging archive",
        version="0.1.0",
    )

    @app.get("/health", tags=["operations"], summary="Whether the archive can serve")
    def health() -> JSONResponse:
        try:
            with archive.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return JSONResponse({"status": "unavailable", "database": "down"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "up"})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    def metrics() -> Response:
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
        registry = CollectorRegistry()  # the counters of every listener process, summed
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
