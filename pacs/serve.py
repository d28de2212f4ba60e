"""``pacs serve``: the DICOM listeners and the HTTP API, as one service."""

import contextlib
import gc
import ipaddress
import logging
import signal
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

from dicom_node.node import DicomNode
from dicom_node.tls import BCP195_CIPHERS, client_certificate_mode
from pacs.listeners import ListenerPool, listener_count
from pacs.settings import Settings
from storage import Archive
from storage.audit_forwarder import AuditForwarder
from viewer_api.app import create_app

if TYPE_CHECKING:
    from inference.service import InferenceService

log = logging.getLogger(__name__)


class UnsafeSettings(ValueError):
    """Settings the server refuses to start with (exposure of patient data, a taken port)."""


def check_safe(settings: Settings) -> None:
    if settings.accept_any_caller and not _is_loopback(settings.host):
        raise UnsafeSettings(
            "PACS_ACCEPT_ANY_CALLER lets any DICOM node store and retrieve; it is only "
            f"allowed on a loopback address, not on {settings.host}"
        )
    if not _is_loopback(settings.http_host) and settings.https_certificate is None:
        raise UnsafeSettings(
            "passwords and tokens would cross the network in clear text: the HTTP API serves "
            f"{settings.http_host} over HTTPS only (PACS_HTTPS_CERTIFICATE and "
            "PACS_HTTPS_PRIVATE_KEY), or stays on a loopback address behind a TLS proxy on "
            "this machine"
        )


def check_port_free(host: str, port: int) -> None:
    """Refuse a DICOM port in use: the listeners share theirs, so they would not notice."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # As the listeners do: connections of a previous run in TIME_WAIT do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UnsafeSettings(
                f"the DICOM port {host}:{port} is in use ({exc.strerror})"
            ) from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _HttpServer(uvicorn.Server):
    """uvicorn, minus re-raising SIGTERM after its shutdown: the DICOM listeners and the
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


def _inference(archive: Archive, settings: Settings) -> "InferenceService | None":
    """AI triage, when enabled: model processes here, or a queue to `pacs worker`s."""
    if not settings.ai_enabled:
        return None
    from inference.service import InferenceService

    if not settings.ai_broker:
        service = InferenceService(archive, settings)
    else:
        from inference.queue import JobQueue

        queue = JobQueue(settings)
        service = InferenceService(archive, settings, publish=queue.publish, on_stop=queue.close)
    service.start()
    return service


def serve(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM, then stop accepting and close the index cleanly."""
    check_safe(settings)
    if settings.dicom_port:
        check_port_free(settings.host, settings.dicom_port)
    if settings.tls_port:
        check_port_free(settings.host, settings.tls_port)
    archive = Archive.open(settings)  # creates or upgrades the schema before any listener
    audit_forwarder = AuditForwarder.from_settings(archive, settings, aet=settings.aet)
    if audit_forwarder is not None:
        audit_forwarder.start()  # the audit trail to the syslog collector (IHE ATNA)
    count = listener_count(settings.dicom_processes)
    node = DicomNode(archive, settings, host=settings.host, reuse_port=count > 1)
    node.start()
    pool = ListenerPool(settings, count - 1)
    pool.start()
    triage = _inference(archive, settings)
    log.info("%d DICOM listener process(es) on %s:%d", count, settings.host, node.port)
    config = uvicorn.Config(
        create_app(archive, settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        server_header=False,
        # HTTPS when both files are set; TLS 1.2 at least (Python's default), and for 1.2
        # only ECDHE with AEAD ciphers, as the DICOM TLS port (BCP 195, dicom_node.tls).
        ssl_certfile=settings.https_certificate,
        ssl_keyfile=settings.https_private_key,
        ssl_ca_certs=settings.https_ca_certificates,
        ssl_cert_reqs=client_certificate_mode(
            ca_certificates=settings.https_ca_certificates,
            required=settings.https_require_client_certificate,
        ),
        ssl_ciphers=BCP195_CIPHERS,
    )
    gc.freeze()  # as in the listener processes (pacs.listeners): cheap full collections
    try:
        _HttpServer(config).run()
    finally:
        log.info("Shutting down")
        if triage is not None:
            triage.stop()
        pool.stop()
        node.stop()
        if audit_forwarder is not None:
            audit_forwarder.stop()
        archive.close()
