"""The HTTP API: DICOMweb, the OHIF viewer, health and Prometheus metrics."""

import hmac
import logging
import os
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from storage import Archive, CannotTranscode, InvalidQuery, NotFound, StorageUnavailable
from storage.errors import AlreadyClaimed, InvalidGrant, ReportConflict
from viewer_api.ai import ai_router
from viewer_api.audit import audit_router
from viewer_api.auth import ADMINS, Authenticator, Unauthorized, require
from viewer_api.config import ApiSettings
from viewer_api.dicomweb import Decoder, Renditions, dicomweb_router, wado_uri_router
from viewer_api.errors import RETRY_AFTER_SECONDS, UNAVAILABLE, ApiError, Unavailable
from viewer_api.limits import TooManyRequests
from viewer_api.oidc_signin import oidc_signin_router
from viewer_api.priors import priors_router
from viewer_api.reports.http import reports_router
from viewer_api.reports.signing import trust_of
from viewer_api.security import SecurityHeaders, error_headers, viewer_policy
from viewer_api.sharing import sharing_router
from viewer_api.signin import signin_router
from viewer_api.urls import client_address
from viewer_api.viewer import mount_viewer, viewer_directory, viewer_router
from viewer_api.worklist import worklist_router
from viewer_api.worklist_page import worklist_page_router

log = logging.getLogger(__name__)


def create_app(archive: Archive, settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()  # type: ignore[call-arg]  # (from the environment)
    decoder = Decoder(workers=settings.decode_workers, memory_mb=settings.decode_memory_mb)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        decoder.close()

    app = FastAPI(
        title="Dalat PACS",
        summary="Provincial medical imaging archive",
        version="0.1.0",
        lifespan=lifespan,
    )
    renditions = Renditions(archive, settings, decoder)
    auth = Authenticator(archive, settings)
    single_sign_on = auth.oidc is not None and settings.oidc_client_id is not None
    app.include_router(signin_router(archive, auth, single_sign_on=single_sign_on))
    if single_sign_on:
        app.include_router(oidc_signin_router(archive, auth, settings))
    app.include_router(dicomweb_router(archive, settings, decoder, renditions, auth))
    app.include_router(wado_uri_router(archive, renditions, auth))
    app.include_router(ai_router(archive, auth))
    app.include_router(audit_router(archive, auth))
    app.include_router(sharing_router(archive, auth, settings))
    app.include_router(worklist_router(archive, auth))
    app.include_router(
        reports_router(
            archive, auth, settings, lambda: trust_of(settings, archive.settings.data_dir)
        )
    )
    app.include_router(worklist_page_router(auth))
    app.include_router(priors_router(archive, auth))
    app.include_router(viewer_router(settings))
    ohif = viewer_directory(settings)
    app.add_middleware(SecurityHeaders, viewer=viewer_policy(ohif / "index.html" if ohif else None))
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],
            max_age=600,
        )

    @app.exception_handler(ApiError)
    def api_error(request: Request, exc: ApiError) -> Response:
        public = UNAVAILABLE if exc.status == 503 else None
        response = _refuse(request, exc.status, exc.reason, public=public)
        if isinstance(exc, Unauthorized):  # RFC 6750 3
            response.headers["WWW-Authenticate"] = 'Bearer realm="dalat-pacs"'
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(exc.retry_after)
        if isinstance(exc, Unavailable):
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @app.exception_handler(AlreadyClaimed)
    def already_claimed(request: Request, exc: AlreadyClaimed) -> Response:
        return _refuse(request, 409, exc.reason)

    @app.exception_handler(ReportConflict)
    def report_conflict(request: Request, exc: ReportConflict) -> Response:
        return _refuse(request, 409, exc.reason)

    @app.exception_handler(InvalidGrant)
    def invalid_grant(request: Request, exc: InvalidGrant) -> Response:
        return _refuse(request, 400, exc.reason)

    @app.exception_handler(InvalidQuery)
    def invalid_query(request: Request, exc: InvalidQuery) -> Response:
        return _refuse(request, 400, exc.reason)

    @app.exception_handler(NotFound)
    def not_found(request: Request, exc: NotFound) -> Response:
        return _refuse(request, 404, exc.reason)

    @app.exception_handler(CannotTranscode)
    def cannot_transcode(request: Request, exc: CannotTranscode) -> Response:
        return _refuse(request, 406, exc.reason)

    @app.exception_handler(StorageUnavailable)
    def unavailable(request: Request, exc: StorageUnavailable) -> Response:
        response = _refuse(request, 503, exc.reason, public=UNAVAILABLE)
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @app.exception_handler(Exception)
    def unexpected(request: Request, exc: Exception) -> Response:
        """A fault of ours: logged with its trace and an incident number; the client gets
        the number, never the trace or a path."""
        incident = uuid.uuid4().hex[:12]
        log.error(
            "Incident %s: %s %s failed",
            incident,
            request.method,
            loggable(request.url.path),
            exc_info=exc,
        )
        # Sent from outside the middleware stack: the security headers go on here.
        return JSONResponse(
            {"detail": f"internal error (incident {incident}; the server log has it)"},
            status_code=500,
            headers=error_headers(),
        )

    pings = threading.BoundedSemaphore(2)

    @app.get("/health", tags=["operations"], summary="Whether the archive can serve")
    def health() -> JSONResponse:
        """503 within HEALTH_TIMEOUT when the index database refuses or does not answer
        (a partition leaves a query waiting, not refused): a load balancer's check must
        not wait as long as that."""
        if not _answers(archive, pings, within=HEALTH_TIMEOUT):
            return JSONResponse({"status": "unavailable", "database": "down"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "up"})

    admin = require(auth, ADMINS)

    async def scraper(request: Request) -> None:
        """Prometheus with PACS_METRICS_TOKEN (metrics hold no patient data), or an
        administrator."""
        expected = settings.metrics_token
        if expected is not None and hmac.compare_digest(
            request.headers.get("authorization", "").encode(),
            f"Bearer {expected.get_secret_value()}".encode(),
        ):
            return
        await admin(request, None)

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics (PACS_METRICS_TOKEN, or an administrator's token)",
        dependencies=[Depends(scraper)],
    )
    def metrics() -> Response:
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
        registry = CollectorRegistry()  # the counters of every listener process, summed
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    mount_viewer(app, settings, auth.signed_in)  # last: it answers every path the API does not
    return app


def loggable(path: str) -> str:
    """A request path fit for the log: a capability link's token is a credential."""
    if path.startswith("/share/"):
        return "/share/[link token]"
    return path


HEALTH_TIMEOUT = 3.0
"""Seconds /health waits for the index database to answer: under a load balancer's usual
5 s, so that the check gets its 503 rather than a timeout of its own."""


def _answers(archive: Archive, pings: threading.Semaphore, within: float) -> bool:
    """Whether the index database answers a query within `within` seconds. The query runs
    on a daemon thread, left behind if it hangs (until the connection's keepalives end it)
    rather than holding the caller or the process's exit; while `pings` are all waiting,
    the database is down without asking it again."""
    if not pings.acquire(blocking=False):
        return False
    finished = threading.Event()
    answers: list[bool] = []

    def ping() -> None:
        try:
            with archive.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            answers.append(True)
        except SQLAlchemyError:
            answers.append(False)
        finally:
            pings.release()
            finished.set()

    threading.Thread(target=ping, name="health-ping", daemon=True).start()
    return finished.wait(within) and answers == [True]


def _refuse(
    request: Request, status: int, reason: str, *, public: str | None = None
) -> JSONResponse:
    """Log why `request` is refused; answer `status` with the reason, or `public` instead."""
    log.warning(
        "Refused %s %s from %s with %d: %s",
        request.method,
        loggable(request.url.path),
        client_address(request) or "?",
        status,
        reason,
    )
    return JSONResponse({"detail": public or reason}, status_code=status)
