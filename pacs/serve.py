"""``pacs serve``: the DICOM listener and the HTTP API in one process."""

import contextlib
import ipaddress
import logging
import signal
from collections.abc import Iterator

import uvicorn

from dicom_node import DicomNode
from pacs.settings import Settings
from storage import Archive
from viewer_api import create_app

log = logging.getLogger(__name__)


class UnsafeSettings(ValueError):
    """Settings that would expose patient data; the server refuses to start with them."""


def check_safe(settings: Settings) -> None:
    if settings.accept_any_caller and not _is_loopback(settings.host):
        raise UnsafeSettings(
            "PACS_ACCEPT_ANY_CALLER lets any DICOM node store and retrieve; it is only "
            f"allowed on a loopback address, not on {settings.host}"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _HttpServer(uvicorn.Server):
    """uvicorn, minus re-raising SIGTERM after its shutdown: the DICOM listener and the
    index writer still have to stop cleanly after it returns."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM, then stop accepting, and close the index cleanly."""
    check_safe(settings)
    archive = Archive.open(settings)
    node = DicomNode(archive, settings, host=settings.host)
    node.start()
    config = uvicorn.Config(
        create_app(archive),
        host=settings.host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        server_header=False,
    )
    try:
        _HttpServer(config).run()
    finally:
        log.info("Shutting down")
        node.stop()
        archive.close()
