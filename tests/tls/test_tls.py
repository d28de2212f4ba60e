"""DICOM TLS (PS3.15 B.9, BCP 195 profile) on the listener, and HTTPS on the API.

Real handshakes over loopback with a throwaway PKI (``tests.tls_certs``): pynetdicom and
DCMTK as modalities, Python's own ``ssl`` as the peer that does it wrong, httpx for HTTPS,
and ``pacs serve`` as a process for the wiring of both.
"""

import logging
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from pydicom.uid import CTImageStorage
from pynetdicom.sop_class import Verification

from dicom_node import DicomSettings
from dicom_node.node import DicomNode
from dicom_node.tls import TlsSettingsError, client_context, server_context
from storage import Archive, PeerRegistry
from tests import factories
from tests.conftest import OUR_AET, SCU_AET, associate, free_port, need
from tests.tls.certs import Pki, encrypted_copy
from viewer_api import ApiSettings

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def tls_settings(pki: Pki, **overrides: Any) -> DicomSettings:
    values: dict[str, Any] = {
        "aet": OUR_AET,
        "dicom_port": 0,
        "tls_port": 0,
        "tls_certificate": pki.server_cert,
        "tls_private_key": pki.server_key,
        "tls_ca_certificates": pki.ca,
        "acse_timeout": 5,
        **overrides,
    }
    return DicomSettings(_env_file=None, **values)


@contextmanager
def running(archive: Archive, settings: DicomSettings) -> Iterator[DicomNode]:
    node = DicomNode(archive, settings, host="127.0.0.1")
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def tls_node(archive: Archive, peers: PeerRegistry, pki: Pki) -> Iterator[DicomNode]:
    with running(archive, tls_settings(pki)) as node:
        yield node


@pytest.fixture
def strict_node(archive: Archive, peers: PeerRegistry, pki: Pki) -> Iterator[DicomNode]:
    """A TLS port that requires a client certificate signed by the test CA."""
    with running(archive, tls_settings(pki, tls_require_client_certificate=True)) as node:
        yield node


def tls_port(node: DicomNode) -> int:
    assert node.tls_port is not None
    return node.tls_port


def modality(pki: Pki, *, certificate: bool = True) -> tuple[ssl.SSLContext, str]:
    """pynetdicom's ``tls_args`` for a modality that trusts the test CA."""
    context = client_context(
        ca_certificates=pki.ca,
        certificate=pki.client_cert if certificate else None,
        private_key=pki.client_key if certificate else None,
    )
    return context, "localhost"


def refusals(caplog: pytest.LogCaptureFixture, count: int) -> list[str]:
    """The listener's refusals of TLS connections, once `count` are logged: the connection's
    thread logs after the peer has had the alert, so the peer may have given up first."""
    deadline = time.monotonic() + 5
    while True:
        lines = [r.getMessage() for r in caplog.records]
        lines = [line for line in lines if line.startswith("Refused a TLS connection from")]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def echo_over_tls(node: DicomNode, pki: Pki) -> None:
    assoc = associate(tls_port(node), Verification, tls_args=modality(pki))
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()


# -- pynetdicom over TLS


def test_echo_and_store_over_tls_land_in_the_archive(
    tls_node: DicomNode, archive: Archive, pki: Pki
) -> None:
    dataset = factories.ct_series(1)[0]
    assoc = associate(tls_port(tls_node), Verification, CTImageStorage, tls_args=modality(pki))
    assert assoc.is_established
    sock = assoc.dul.socket.socket if assoc.dul.socket else None
    assert isinstance(sock, ssl.SSLSocket)
    assert sock.version() == "TLSv1.3"  # BCP 195: 1.3 whenever both sides have it
    assert assoc.send_c_echo().Status == 0
    assert assoc.send_c_store(dataset).Status == 0
    assoc.release()
    assert [i.sop_instance_uid for i in archive.iter_instances()] == [dataset.SOPInstanceUID]
    plain = associate(tls_node.port, Verification)  # the plain port serves as before
    assert plain.is_established
    plain.release()


def test_a_client_certificate_is_optional_unless_required(tls_node: DicomNode, pki: Pki) -> None:
    assoc = associate(tls_port(tls_node), Verification, tls_args=modality(pki, certificate=False))
    assert assoc.is_established
    assoc.release()


def test_tls_1_2_with_an_aead_ecdhe_suite_is_accepted(tls_node: DicomNode, pki: Pki) -> None:
    context = ssl.create_default_context(cafile=pki.ca)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    with (
        socket.create_connection(("127.0.0.1", tls_port(tls_node)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        assert sock.version() == "TLSv1.2"
        assert (sock.cipher() or ("",))[0] == "ECDHE-RSA-AES128-GCM-SHA256"


def test_the_contexts_follow_the_bcp_195_profile(pki: Pki) -> None:
    server = server_context(certificate=pki.server_cert, private_key=pki.server_key)
    for context in (server, client_context(ca_certificates=pki.ca)):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert context.options & ssl.OP_NO_COMPRESSION
        assert context.options & ssl.OP_NO_RENEGOTIATION
        suites = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
        assert suites
        assert all(s.startswith("ECDHE-") and ("GCM" in s or "CHACHA20" in s) for s in suites)
    assert server.verify_mode == ssl.CERT_NONE  # no CAs to check a client certificate with


# -- DCMTK over TLS


def dcmtk(
    tool: str, port: int, *tls: str, files: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need(tool), "-aet", SCU_AET, "-aec", OUR_AET, *tls, "127.0.0.1", str(port), *files],
        capture_output=True,
        text=True,
        timeout=60,
        env=DCMTK_ENV,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def dcmtk_tls(pki: Pki) -> tuple[str, ...]:
    """DCMTK's options for TLS with a client certificate, trusting the test CA."""
    return ("+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca))


def test_dcmtk_echoscu_and_storescu_over_tls(
    strict_node: DicomNode, archive: Archive, pki: Pki, tmp_path: Path
) -> None:
    port = tls_port(strict_node)
    echo = dcmtk("echoscu", port, *dcmtk_tls(pki))
    assert echo.returncode == 0, echo.stderr
    folder = tmp_path / "sent"
    factories.write_all(factories.ct_series(3), folder)
    store = dcmtk("storescu", port, *dcmtk_tls(pki), "+sd", files=(str(folder),))
    assert store.returncode == 0, store.stderr
    assert archive.stats().instances == 3


# -- client certificates


def test_a_peer_without_a_certificate_is_refused_at_the_handshake(
    strict_node: DicomNode, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    port = tls_port(strict_node)
    with caplog.at_level(logging.WARNING, logger="dicom_node"):
        assoc = associate(port, Verification, tls_args=modality(pki, certificate=False), timeout=5)
        assert not assoc.is_established
        anonymous = dcmtk("echoscu", port, "+tla", "+cf", str(pki.ca))
        assert anonymous.returncode != 0
        why = "it presented no client certificate (PACS_TLS_REQUIRE_CLIENT_CERTIFICATE)"
        assert refusals(caplog, 2) == [f"Refused a TLS connection from 127.0.0.1: {why}"] * 2
    echo_over_tls(strict_node, pki)  # and the listener goes on serving


def test_a_certificate_from_another_ca_is_refused(
    strict_node: DicomNode, pki: Pki, other_pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = client_context(
        ca_certificates=pki.ca, certificate=other_pki.client_cert, private_key=other_pki.client_key
    )
    with caplog.at_level(logging.WARNING, logger="dicom_node"):
        assoc = associate(
            tls_port(strict_node), Verification, tls_args=(stranger, "localhost"), timeout=5
        )
        assert not assoc.is_established
        (line,) = refusals(caplog, 1)
    assert line.endswith(
        "its client certificate did not pass the check against PACS_TLS_CA_CERTIFICATES "
        "(unable to get local issuer certificate)"
    )
    echo_over_tls(strict_node, pki)


def test_a_modality_that_does_not_trust_us_gets_no_association(
    tls_node: DicomNode, other_pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dicom_node"):
        assoc = associate(tls_port(tls_node), Verification, tls_args=modality(other_pki))
        assert not assoc.is_established
        (line,) = refusals(caplog, 1)
    assert line.endswith("it does not trust our certificate's CA")


# -- plain DICOM on the TLS port, old TLS versions and weak suites


def test_a_plain_client_on_the_tls_port_is_refused(
    tls_node: DicomNode, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dicom_node"):
        assoc = associate(tls_port(tls_node), Verification, timeout=5)
        assert not assoc.is_established
        plain = dcmtk("echoscu", tls_port(tls_node), "-to", "5", "-ta", "5")
        assert plain.returncode != 0
        lines = refusals(caplog, 2)
    assert len(lines) == 2
    assert all("it does not speak TLS (a plain DICOM connection" in line for line in lines)
    echo_over_tls(tls_node, pki)


def _legacy_client(low: ssl.TLSVersion, high: ssl.TLSVersion, ciphers: str) -> ssl.SSLContext:
    with warnings.catch_warnings():  # Python deprecates the versions this peer insists on
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version, context.maximum_version = low, high
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers(ciphers)
    return context


@pytest.mark.parametrize(
    ("low", "high", "ciphers", "why"),
    [
        pytest.param(
            ssl.TLSVersion.TLSv1,
            ssl.TLSVersion.TLSv1_1,
            "DEFAULT:@SECLEVEL=0",
            "it offered only TLS versions older than 1.2",
            id="tls-1.1",
        ),
        pytest.param(
            ssl.TLSVersion.TLSv1_2,
            ssl.TLSVersion.TLSv1_2,
            "ECDHE-RSA-AES128-SHA256:AES128-GCM-SHA256:DHE-RSA-AES128-GCM-SHA256",
            "no cipher suite in common (TLS 1.2 allows ECDHE with AES-GCM or ChaCha20 only)",
            id="tls-1.2-cbc-or-no-ecdhe",
        ),
    ],
)
def test_what_bcp_195_excludes_is_refused(
    tls_node: DicomNode,
    pki: Pki,
    caplog: pytest.LogCaptureFixture,
    low: ssl.TLSVersion,
    high: ssl.TLSVersion,
    ciphers: str,
    why: str,
) -> None:
    context = _legacy_client(low, high, ciphers)
    with caplog.at_level(logging.WARNING, logger="dicom_node"):
        with (
            socket.create_connection(("127.0.0.1", tls_port(tls_node)), timeout=5) as raw,
            pytest.raises(ssl.SSLError),
        ):
            context.wrap_socket(raw, server_hostname="localhost")
        assert refusals(caplog, 1) == [f"Refused a TLS connection from 127.0.0.1: {why}"]
    echo_over_tls(tls_node, pki)


# -- the guards hold on the TLS port


def test_a_pdu_declaring_4_gib_over_tls_is_cut_off_after_its_header(
    tls_node: DicomNode, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    context = client_context(ca_certificates=pki.ca)
    with (
        caplog.at_level(logging.WARNING, logger="dicom_node"),
        socket.create_connection(("127.0.0.1", tls_port(tls_node)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        sock.sendall(struct.pack(">BBL", 0x01, 0, 0xFFFFFFFF))
        assert sock.recv(1) == b""  # closed, nothing buffered
    assert "declares 4294967295 bytes, more than the 65536 accepted" in caplog.text
    echo_over_tls(tls_node, pki)


def test_connections_that_never_handshake_are_capped_and_timed_out(
    archive: Archive, peers: PeerRegistry, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    settings = tls_settings(pki, max_connections_per_address=2, acse_timeout=1)
    with running(archive, settings) as node, caplog.at_level(logging.WARNING, logger="dicom_node"):
        silent = [socket.create_connection(("127.0.0.1", tls_port(node)), timeout=5)]
        silent.append(socket.create_connection(("127.0.0.1", tls_port(node)), timeout=5))
        time.sleep(0.2)
        third = socket.create_connection(("127.0.0.1", tls_port(node)), timeout=5)
        assert third.recv(1) == b""  # over the cap: closed at once, no handshake
        assert "it already has 2 open" in caplog.text
        started = time.monotonic()
        for sock in silent:
            assert sock.recv(1) == b""  # the handshake timed out (PACS_ACSE_TIMEOUT)
        assert time.monotonic() - started < 4
        why = "it did not complete the handshake in time"
        assert refusals(caplog, 2) == [f"Refused a TLS connection from 127.0.0.1: {why}"] * 2
        for sock in (*silent, third):
            sock.close()
        echo_over_tls(node, pki)


def test_a_stalled_handshake_holds_up_neither_other_peers_nor_stop(
    archive: Archive, peers: PeerRegistry, pki: Pki
) -> None:
    node = DicomNode(archive, tls_settings(pki, acse_timeout=30), host="127.0.0.1")
    node.start()
    try:
        with socket.create_connection(("127.0.0.1", tls_port(node)), timeout=5) as silent:
            started = time.monotonic()
            echo_over_tls(node, pki)
            assert time.monotonic() - started < 2
            started = time.monotonic()
            node.stop()
            assert time.monotonic() - started < 2
            assert silent.recv(1) == b""
    finally:
        node.stop()


# -- settings that cannot work stop the start


def test_unusable_tls_files_stop_the_start_with_the_setting_named(
    archive: Archive, pki: Pki, other_pki: Pki, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    locked = encrypted_copy(pki.server_key, tmp_path / "locked.key", b"secret")
    cases = [
        (
            {"tls_certificate": tmp_path / "missing.pem"},
            r"PACS_TLS_CERTIFICATE \(.*missing.pem\) cannot be read: No such file or directory",
        ),
        ({"tls_private_key": other_pki.server_key}, "the private key does not belong"),
        ({"tls_private_key": locked}, r"PACS_TLS_PRIVATE_KEY \(.*locked.key\) is encrypted"),
        ({"tls_certificate": garbage}, "are not a PEM certificate and an unencrypted PEM key"),
        ({"tls_ca_certificates": garbage}, r"PACS_TLS_CA_CERTIFICATES \(.*\) holds no PEM"),
    ]
    for overrides, message in cases:
        node = DicomNode(archive, tls_settings(pki, **overrides), host="127.0.0.1")
        with pytest.raises(TlsSettingsError, match=message):
            node.start()
        with pytest.raises(RuntimeError, match="not started"):
            _ = node.port  # nothing listens, not even the plain port


def test_a_taken_tls_port_leaves_nothing_listening(archive: Archive, pki: Pki) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        node = DicomNode(archive, tls_settings(pki, tls_port=port), host="127.0.0.1")
        with pytest.raises(OSError, match="in use"):
            node.start()
    with pytest.raises(RuntimeError, match="not started"):
        _ = node.port


def test_tls_settings_that_cannot_go_together_are_refused(pki: Pki) -> None:
    with pytest.raises(ValidationError, match="PACS_TLS_PORT needs PACS_TLS_CERTIFICATE"):
        DicomSettings(tls_port=2762, _env_file=None)
    with pytest.raises(ValidationError, match="PACS_TLS_CERTIFICATE and PACS_TLS_PRIVATE_KEY"):
        DicomSettings(tls_port=2762, tls_certificate=pki.server_cert, _env_file=None)
    with pytest.raises(ValidationError, match="both 11112"):
        tls_settings(pki, dicom_port=11112, tls_port=11112)
    with pytest.raises(ValidationError, match="REQUIRE_CLIENT_CERTIFICATE needs PACS_TLS_CA"):
        tls_settings(pki, tls_ca_certificates=None, tls_require_client_certificate=True)
    with pytest.raises(TlsSettingsError, match="REQUIRE_CLIENT_CERTIFICATE needs"):
        server_context(
            certificate=pki.server_cert,
            private_key=pki.server_key,
            require_client_certificate=True,
        )


def test_https_settings_that_cannot_go_together_are_refused(pki: Pki) -> None:
    with pytest.raises(ValidationError, match="PACS_HTTPS_CERTIFICATE and PACS_HTTPS_PRIVATE_KEY"):
        ApiSettings(https_certificate=pki.server_cert, _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="PACS_HTTPS_CERTIFICATE and PACS_HTTPS_PRIVATE_KEY"):
        ApiSettings(https_private_key=pki.server_key, _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match=r"client certificates .* need HTTPS"):
        ApiSettings(https_ca_certificates=pki.ca, _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="REQUIRE_CLIENT_CERTIFICATE needs PACS_HTTPS_CA"):
        ApiSettings(  # type: ignore[call-arg]
            https_certificate=pki.server_cert,
            https_private_key=pki.server_key,
            https_require_client_certificate=True,
            _env_file=None,
        )


# -- pacs serve: HTTPS, and DICOM TLS in every listener process


@contextmanager
def pacs_serve(
    tmp_path: Path, pki: Pki, client: ssl.SSLContext, **settings: str
) -> Iterator[tuple[int, int, Path]]:
    """``pacs serve`` with HTTPS and a DICOM TLS port, once `client` gets an HTTPS answer and
    the TLS port listens; yields (HTTPS port, TLS port, its log)."""
    http_port, tls_port = free_port(), free_port()
    env = {
        **os.environ,
        "PACS_DATA_DIR": str(tmp_path / "archive"),
        "PACS_MIN_FREE_MB": "0",
        "PACS_DICOM_PORT": str(free_port()),
        "PACS_DICOM_PROCESSES": "2",
        "PACS_HTTP_PORT": str(http_port),
        "PACS_AI_ENABLED": "false",
        "PACS_TLS_PORT": str(tls_port),
        "PACS_TLS_CERTIFICATE": str(pki.server_cert),
        "PACS_TLS_PRIVATE_KEY": str(pki.server_key),
        "PACS_TLS_CA_CERTIFICATES": str(pki.ca),
        "PACS_HTTPS_CERTIFICATE": str(pki.server_cert),
        "PACS_HTTPS_PRIVATE_KEY": str(pki.server_key),
        **settings,
    }
    pacs = [sys.executable, "-m", "pacs"]
    scu = ["remote", "add", "scu", "--aet", SCU_AET, "--host", "127.0.0.1", "--port", "104"]
    subprocess.run([*pacs, *scu], env=env, check=True, capture_output=True, timeout=60)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*pacs, "serve"], env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while not _answers(http_port, client) or not _listening(tls_port):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        try:
            yield http_port, tls_port, log
        except Exception as exc:
            exc.add_note(f"pacs serve's log:\n{log.read_text()}")
            raise
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _answers(port: int, client: ssl.SSLContext) -> bool:
    try:
        return httpx.get(f"https://localhost:{port}/health", verify=client).status_code == 200
    except httpx.TransportError:
        return False


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _https_version(port: int, context: ssl.SSLContext) -> str | None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        return sock.version()


def test_pacs_serve_speaks_https_and_dicom_tls(tmp_path: Path, pki: Pki) -> None:
    trust = ssl.create_default_context(cafile=pki.ca)
    with pacs_serve(tmp_path, pki, trust) as (http_port, port, log):
        assert log.read_text().count("DICOM TLS listener DALAT on") == 2  # in each process
        assert _https_version(http_port, trust) == "TLSv1.3"
        for low, high, ciphers in [  # BCP 195 as on the DICOM port: no TLS 1.1, no CBC
            (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1, "DEFAULT:@SECLEVEL=0"),
            (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-AES128-SHA256"),
        ]:
            with pytest.raises(ssl.SSLError):
                _https_version(http_port, _legacy_client(low, high, ciphers))
        with pytest.raises(httpx.TransportError):  # no plain HTTP beside it
            httpx.get(f"http://127.0.0.1:{http_port}/health")
        with pytest.raises(httpx.ConnectError):  # a certificate our CA did not sign
            httpx.get(f"https://localhost:{http_port}/health", verify=ssl.create_default_context())
        for _ in range(4):  # the kernel spreads them over both listener processes
            assoc = associate(port, Verification, tls_args=modality(pki))
            assert assoc.is_established
            assert assoc.send_c_echo().Status == 0
            assoc.release()


def test_pacs_serve_can_require_https_client_certificates(tmp_path: Path, pki: Pki) -> None:
    settings = {
        "PACS_HTTPS_CA_CERTIFICATES": str(pki.ca),
        "PACS_HTTPS_REQUIRE_CLIENT_CERTIFICATE": "true",
    }
    with_certificate = ssl.create_default_context(cafile=pki.ca)
    with_certificate.load_cert_chain(pki.client_cert, pki.client_key)
    with pacs_serve(tmp_path, pki, with_certificate, **settings) as (http_port, _, _):
        url = f"https://localhost:{http_port}/health"
        assert httpx.get(url, verify=with_certificate).status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.get(url, verify=ssl.create_default_context(cafile=pki.ca))
