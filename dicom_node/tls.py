"""TLS contexts after the BCP 195 TLS Profile (PS3.15 B.9, RFC 9325), and why handshakes fail.

What the profile asks, and where it is done here:

- TLS 1.2 at least, 1.3 whenever the peer has it: ``minimum_version``; OpenSSL offers its
  newest version first.
- For TLS 1.2, only ECDHE key exchange with an AEAD cipher (AES-GCM, ChaCha20-Poly1305):
  :data:`BCP195_CIPHERS`, so every session has forward secrecy and no CBC padding oracle.
  TLS 1.3's suites are all of that kind already and are left as OpenSSL has them.
- No TLS compression (CRIME) and no renegotiation (a TLS 1.2 client could otherwise make
  the server redo the expensive half of a handshake as often as it likes).

The files are read when a context is built, at start-up, so a missing, unreadable or
mismatched file stops the start with :class:`TlsSettingsError`, which names the setting,
instead of failing every handshake afterwards.

The associations the archive opens itself (C-MOVE sub-operations, storage commitment
reports, exports) use TLS to peers registered with ``--tls``: :func:`peer_tls_args` builds
their context when it is needed, so a TLS peer never stops the start, and a file that
cannot be used fails that one association with the setting named.
"""

import ssl
from pathlib import Path
from typing import cast

from dicom_node.config import DicomSettings
from storage import Peer

BCP195_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
"""TLS 1.2 cipher suites, in OpenSSL's syntax: authenticated ECDHE with an AEAD cipher."""

_Subject = tuple[tuple[tuple[str, str], ...], ...]
_OPTIONS = ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE


class TlsSettingsError(ValueError):
    """TLS cannot be set up as configured: a file is missing, unreadable, not PEM, or the
    private key does not belong to the certificate. The message names the setting."""


def client_certificate_mode(*, ca_certificates: Path | None, required: bool) -> ssl.VerifyMode:
    """What a server asks of a client's certificate: none without CAs to check it against;
    with them, a certificate that is presented must chain to them, and `required` refuses
    clients that present none."""
    if required:
        return ssl.CERT_REQUIRED
    return ssl.CERT_OPTIONAL if ca_certificates is not None else ssl.CERT_NONE


def server_context(
    *,
    certificate: Path,
    private_key: Path,
    ca_certificates: Path | None = None,
    require_client_certificate: bool = False,
    setting: str = "PACS_TLS",
) -> ssl.SSLContext:
    """A server context: our certificate, and the client certificates asked for.

    `setting` is the prefix of the settings the files came from, for the error messages.
    """
    context = _bcp195(server=True)
    _load_chain(context, certificate, private_key, setting)
    if ca_certificates is not None:
        _load_cas(context, ca_certificates, f"{setting}_CA_CERTIFICATES")
    elif require_client_certificate:
        raise TlsSettingsError(
            f"{setting}_REQUIRE_CLIENT_CERTIFICATE needs {setting}_CA_CERTIFICATES: the CAs "
            "that sign the client certificates"
        )
    context.verify_mode = client_certificate_mode(
        ca_certificates=ca_certificates, required=require_client_certificate
    )
    return context


def client_context(
    *,
    ca_certificates: Path | None = None,
    certificate: Path | None = None,
    private_key: Path | None = None,
    setting: str = "PACS_TLS",
) -> ssl.SSLContext:
    """A context for associations we request: the peer's certificate is checked against
    `ca_certificates` (default: the system's CAs) and its host name; ours is presented when
    given, for peers that require one."""
    context = _bcp195(server=False)
    if ca_certificates is not None:
        _load_cas(context, ca_certificates, f"{setting}_CA_CERTIFICATES")
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if certificate is not None:
        _load_chain(context, certificate, private_key or certificate, setting)
    return context


def listener_context(settings: DicomSettings) -> ssl.SSLContext | None:
    """The context of the DICOM TLS port, or None when ``PACS_TLS_PORT`` is not set."""
    if settings.tls_port is None:
        return None
    if settings.tls_certificate is None or settings.tls_private_key is None:
        raise TlsSettingsError("PACS_TLS_PORT needs PACS_TLS_CERTIFICATE and PACS_TLS_PRIVATE_KEY")
    return server_context(
        certificate=settings.tls_certificate,
        private_key=settings.tls_private_key,
        ca_certificates=settings.tls_ca_certificates,
        require_client_certificate=settings.tls_require_client_certificate,
    )


class RequestorTlsSocket(ssl.SSLSocket):
    """The TLS socket of an association we open: it keeps the error its handshake failed
    with, since pynetdicom only logs OpenSSL's text and reports a failed association."""

    handshake_error: OSError | None = None

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except OSError as exc:
            self.handshake_error = exc
            raise


def peer_tls_args(peer: Peer, settings: DicomSettings) -> tuple[ssl.SSLContext, str] | None:
    """pynetdicom's ``tls_args`` for an association we open to `peer`: None for a plain
    peer; for a TLS one, a client context from our settings and the peer's registered host,
    the name its certificate must carry.

    Built at each use, not at start-up: a TLS peer is registered while the archive runs, and
    a renewed file counts without a restart.

    Raises:
        TlsSettingsError: a TLS file in our settings cannot be used; the message names it.
    """
    if not peer.tls:
        return None
    context = client_context(
        ca_certificates=settings.tls_ca_certificates,
        certificate=settings.tls_certificate,
        private_key=settings.tls_private_key,
    )
    context.sslsocket_class = RequestorTlsSocket
    return context, peer.host


def _bcp195(*, server: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_CIPHERS)
    context.options |= _OPTIONS
    return context


def _load_chain(
    context: ssl.SSLContext, certificate: Path, private_key: Path, setting: str
) -> None:
    for path, name in ((certificate, "CERTIFICATE"), (private_key, "PRIVATE_KEY")):
        _readable(path, f"{setting}_{name}")
    try:
        context.load_cert_chain(certificate, private_key, password=_no_password)
    except _Encrypted:
        raise TlsSettingsError(
            f"{setting}_PRIVATE_KEY ({private_key}) is encrypted; the service needs it unencrypted"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            problem = "the private key does not belong to the certificate"
        else:
            problem = f"they are not a PEM certificate and an unencrypted PEM key ({exc.reason})"
        raise TlsSettingsError(
            f"{setting}_CERTIFICATE ({certificate}) and {setting}_PRIVATE_KEY "
            f"({private_key}): {problem}"
        ) from None


def _load_cas(context: ssl.SSLContext, bundle: Path, setting: str) -> None:
    _readable(bundle, setting)
    try:
        context.load_verify_locations(cafile=bundle)
    except ssl.SSLError as exc:
        raise TlsSettingsError(
            f"{setting} ({bundle}) holds no PEM certificates ({exc.reason})"
        ) from None


def _readable(path: Path, setting: str) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise TlsSettingsError(f"{setting} ({path}) cannot be read: {exc.strerror}") from None


class _Encrypted(Exception):
    pass


def _no_password() -> str:
    """An encrypted key fails at once instead of OpenSSL prompting on the terminal."""
    raise _Encrypted


_HANDSHAKE_FAILURES = {
    "WRONG_VERSION_NUMBER": "it does not speak TLS (a plain DICOM connection to the TLS port?)",
    "HTTP_REQUEST": "it sent plain HTTP",
    "UNSUPPORTED_PROTOCOL": "it offered only TLS versions older than 1.2",
    "NO_SHARED_CIPHER": "no cipher suite in common (TLS 1.2 allows ECDHE with AES-GCM or "
    "ChaCha20 only)",
    "NO_SUITABLE_SIGNATURE_ALGORITHM": "no signature algorithm in common",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "it presented no client certificate "
    "(PACS_TLS_REQUIRE_CLIENT_CERTIFICATE)",
    "CERTIFICATE_VERIFY_FAILED": "its client certificate did not pass the check against "
    "PACS_TLS_CA_CERTIFICATES",
    "TLSV1_ALERT_UNKNOWN_CA": "it does not trust our certificate's CA",
    "SSLV3_ALERT_BAD_CERTIFICATE": "it refused our certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "it refused our certificate",
    "TLSV1_ALERT_PROTOCOL_VERSION": "it refused our TLS versions",
    "UNEXPECTED_EOF_WHILE_READING": "it closed the connection during the handshake",
}


_REQUESTED_HANDSHAKE_FAILURES = {
    **_HANDSHAKE_FAILURES,
    "WRONG_VERSION_NUMBER": "it does not speak TLS (its plain DICOM port registered with --tls?)",
    "UNSUPPORTED_PROTOCOL": "it offers only TLS versions older than 1.2",
    "TLSV1_ALERT_PROTOCOL_VERSION": "it refused our TLS versions (1.2 at least)",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "it refused the handshake (no cipher suite in common: "
    "TLS 1.2 allows ECDHE with AES-GCM or ChaCha20 only)",
    "CERTIFICATE_VERIFY_FAILED": "its certificate did not pass the check against "
    "PACS_TLS_CA_CERTIFICATES (the system's CAs when unset) and its registered host",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "it requires a client certificate "
    "(PACS_TLS_CERTIFICATE and PACS_TLS_PRIVATE_KEY)",
}
"""The same failures seen from our side of an association we open: the peer is the server."""


def handshake_failure(exc: BaseException, *, requested: bool = False) -> str:
    """Why a handshake failed, as a sentence for the log line about the peer; `requested`:
    on an association we opened, where the peer is the TLS server."""
    if isinstance(exc, TimeoutError):
        return "it did not complete the handshake in time"
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason)
        failures = _REQUESTED_HANDSHAKE_FAILURES if requested else _HANDSHAKE_FAILURES
        sentence = failures.get(reason, reason.replace("_", " ").lower())
        if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
            sentence += f" ({exc.verify_message})"
        return sentence
    if isinstance(exc, ConnectionError | EOFError):
        return "it closed the connection during the handshake"
    return str(exc) or type(exc).__name__


def describe_session(sock: ssl.SSLSocket) -> str:
    """The version, cipher suite and client certificate's subject of a TLS connection."""
    cipher = sock.cipher()
    subject = cast(_Subject, (sock.getpeercert() or {}).get("subject", ()))
    names = [f"{key}={value}" for rdn in subject for key, value in rdn]
    client = ", ".join(names) if names else "none"
    return f"{sock.version()}, {cipher[0] if cipher else '?'}, client certificate {client}"
