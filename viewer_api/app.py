"""The HTTP API. For now: health and Prometheus metrics (DICOMweb and the viewer follow)."""

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
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
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
