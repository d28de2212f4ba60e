"""``pacs serve``: the DICOM listener and the HTTP API in one process."""

import ipaddress
import logging

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


def serve(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM; in-flight associations are aborted on the way out."""
    check_safe(settings)
    archive = Archive.open(settings)
    node = DicomNode(archive, settings, host=settings.host)
    node.start()
    config = uvicorn.Config(
        create_app(archive), host=settings.host, port=settings.http_port,
        log_config=None, access_log=False, server_header=False,
    )
    try:
        uvicorn.Server(config).run()
    finally:
        log.info("Shutting down")
        node.stop()
        archive.close()
