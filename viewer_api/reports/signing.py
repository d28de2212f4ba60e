"""Signing a report with the radiologist's X.509 certificate, as Vietnam's EMR rules ask:
CMS SignedData (RFC 5652), detached, DER, SHA-256, with the signing-time attribute and the
signer's certificate chain, over :meth:`ReportDocument.canonical`.

The certificate and its private key are kept in the index as a PKCS#12 file encrypted
under the radiologist's PIN, stretched with argon2id and a salt of its own (PKCS#12's own
integrity check would otherwise let someone who copies the index try PINs at millions a
second). :func:`sign` opens it with the PIN typed for this signature,
checks the certificate against the trust anchors, signs and lets the key go; the archive
keeps no key it can use alone. The trust anchors are ``PACS_REPORT_SIGNING_CA`` (a province
or government CA) or, by default, the archive's own small CA (:class:`LocalCa`) in
``<data-dir>/report-signing-ca/``, so the embedded archive signs offline.

Anyone holding the anchors' PEM file checks a report with OpenSSL alone::

    openssl cms -verify -binary -inform DER -in report.p7s -content report.json \\
        -CAfile ca.pem -out /dev/null

Errors, with the HTTP status the API answers::

    ApiError
     ├── WrongPin             403  the PIN does not open the signing certificate
     ├── NoCertificate        409  the user has no signing certificate
     ├── CertificateRefused   422  expired, not yet valid, not chaining to the anchors,
     │                             no digitalSignature/nonRepudiation key usage, revoked
     ├── SignatureInvalid     422  a signature that does not verify over the content
     └── SigningUnavailable   503  the anchors cannot be read, or no openssl to verify with
"""

import base64
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from argon2.low_level import Type, hash_secret_raw
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from viewer_api.config import ApiSettings
from viewer_api.errors import ApiError

LOCAL_CA_DIR = "report-signing-ca"
"""The folder of the archive's own CA, under the data folder."""
LOCAL_CA_NAME = "Dalat PACS report signing CA"
MIN_PIN = 8
"""Characters a PIN has at least: the PKCS#12 is only as strong as its PIN against someone
who copies the index (see :func:`check_pin`)."""
KEPT = b"DALAT-PKCS12-ARGON2ID-1\n"
"""How a PKCS#12 the index keeps begins: then a 16-byte salt, then the PKCS#12 encrypted
under the argon2id-stretched PIN."""
_ARGON2 = {"time_cost": 3, "memory_cost": 64 * 1024, "parallelism": 1, "hash_len": 32}
"""argon2id at 64 MiB and 3 passes: about 0.1 s a PIN here, for us and for a thief alike."""
PKCS12_KDF_ROUNDS = 200_000
"""PBKDF2-SHA256 rounds of the PBES2/AES-256 encryption of the key and certificates."""
_SKEW = timedelta(minutes=5)
"""A new certificate is valid from this long ago: clocks on a LAN differ."""


class WrongPin(ApiError):
    """The PIN does not open the signing certificate. 403, not 401: the user's session is
    valid (401 would make a client drop its token); this one action is refused."""

    status = 403


class NoCertificate(ApiError):
    """The user has no active signing certificate (409: the account's state, not the
    request, is what is missing; an administrator issues or imports one)."""

    status = 409


class CertificateRefused(ApiError):
    """The certificate cannot sign: expired, not yet valid, not chaining to the trust
    anchors, without a signing key usage, or revoked (422: understood, but unusable)."""

    status = 422


class SignatureInvalid(ApiError):
    """A CMS signature that does not verify over the content with the trust anchors."""

    status = 422


class SigningUnavailable(ApiError):
    """The trust anchors cannot be read or ``openssl`` is missing: the archive's setup,
    not the request, is at fault."""

    status = 503


@dataclass(frozen=True, slots=True)
class Signature:
    der: bytes
    """CMS SignedData, detached, DER (a ``.p7s`` file)."""
    subject: str
    """The signer's certificate subject, RFC 4514."""
    certificate_pem: str


@dataclass(frozen=True, slots=True)
class CheckedCertificate:
    """A PKCS#12 the PIN opens, whose certificate may sign reports now."""

    subject: str
    """RFC 4514."""
    certificate_pem: str
    not_after: datetime
    pkcs12: bytes
    """The same key and chain, encrypted again under the same PIN with PBES2/AES-256, as
    the index keeps it."""


def _must_sign_certificates(
    _policy: object, certificate: x509.Certificate, extension: x509.KeyUsage | None
) -> None:
    if extension is not None and not extension.key_cert_sign:
        raise ValueError(f"{certificate.subject.rfc4514_string()} may not sign certificates")


# The web PKI's profile (SAN, extended key usage for TLS, CA/B Forum rules) is not a
# signing CA's: issuers need basicConstraints with cA (checked by the verifier itself) and,
# if they have a key usage, keyCertSign; the signer's key usage is checked by _key_usage.
_CA_POLICY = (
    ExtensionPolicy.permit_all()
    .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, None)
    .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _must_sign_certificates)
)
_SIGNER_POLICY = ExtensionPolicy.permit_all()


@dataclass(frozen=True, slots=True)
class Trust:
    """The CA certificates a signing certificate must chain to."""

    path: Path
    """The PEM file they come from: what verifiers are given."""
    anchors: tuple[x509.Certificate, ...]

    @classmethod
    def load(cls, path: Path) -> "Trust":
        """The CA certificates in the PEM file `path`."""
        try:
            anchors = x509.load_pem_x509_certificates(path.read_bytes())
        except OSError as exc:
            raise SigningUnavailable(
                f"cannot read the report-signing CA certificates {path}: {exc.strerror}"
            ) from None
        except ValueError:
            raise SigningUnavailable(f"{path} holds no PEM certificate") from None
        return cls(path=path, anchors=tuple(anchors))

    def pem(self) -> bytes:
        return b"".join(a.public_bytes(serialization.Encoding.PEM) for a in self.anchors)

    def check(
        self,
        certificate: x509.Certificate,
        now: datetime,
        intermediates: Sequence[x509.Certificate] = (),
    ) -> tuple[x509.Certificate, ...]:
        """The chain from `certificate` to an anchor (signer first), if it may sign at
        `now`; else CertificateRefused with the reason.

        Args:
            certificate: the signer's certificate.
            now: the moment of signing (timezone-aware).
            intermediates: untrusted CA certificates that may complete the chain (those a
                PKCS#12 carries).
        """
        now = _aware(now)
        who = certificate.subject.rfc4514_string()
        if now < certificate.not_valid_before_utc:
            raise CertificateRefused(
                f"the certificate of {who} is not valid before "
                f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
            )
        if now > certificate.not_valid_after_utc:
            raise CertificateRefused(
                f"the certificate of {who} expired on "
                f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
            )
        _key_usage(certificate)
        if not self.anchors:
            raise CertificateRefused(
                f"there is no report-signing CA yet ({self.path}): issue a certificate with "
                "`pacs user certificate issue`, or set PACS_REPORT_SIGNING_CA"
            )
        verifier = (
            PolicyBuilder()
            .store(Store(list(self.anchors)))
            .time(now)
            .max_chain_depth(8)
            .extension_policies(ca_policy=_CA_POLICY, ee_policy=_SIGNER_POLICY)
            .build_client_verifier()
        )
        try:
            verified = verifier.verify(certificate, list(intermediates))
        except VerificationError as exc:
            raise CertificateRefused(
                f"the certificate of {who} does not chain to the report-signing CAs in "
                f"{self.path}: {exc}"
            ) from None
        return tuple(verified.chain)


def trust_of(settings: ApiSettings, data_dir: Path) -> Trust:
    """The trust anchors `settings` name: PACS_REPORT_SIGNING_CA, or the archive's own CA
    in `data_dir` (none yet before the first certificate is issued)."""
    if settings.report_signing_ca is not None:
        return Trust.load(settings.report_signing_ca)
    path = data_dir / LOCAL_CA_DIR / LocalCa.CERTIFICATE
    if not path.exists():
        return Trust(path=path, anchors=())
    return Trust.load(path)


def check_pin(pin: str) -> None:
    """A PIN for a new PKCS#12: at least MIN_PIN printable ASCII characters (OpenSSL and
    other tools read non-ASCII PKCS#12 passwords differently)."""
    if len(pin) < MIN_PIN:
        raise ValueError(f"a PIN has at least {MIN_PIN} characters")
    if not (pin.isascii() and pin.isprintable()):
        raise ValueError("a PIN is made of ASCII letters, digits and punctuation")


def sign(content: bytes, pkcs12: bytes, pin: str, trust: Trust, now: datetime) -> Signature:
    """Sign `content` with the key in `pkcs12`, opened with `pin`.

    The signature's signing-time attribute is this machine's clock; `now` is the moment
    the certificate must be valid at.

    Raises:
        WrongPin, CertificateRefused.
    """
    key, certificate, carried = _open(pkcs12, pin)
    chain = trust.check(certificate, now, carried)
    builder = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(content)
        .add_signer(certificate, key, hashes.SHA256())
    )
    for issuer in chain[1:]:
        builder = builder.add_certificate(issuer)
    der = builder.sign(
        serialization.Encoding.DER,
        # Binary: sign the bytes as they are, not turned into MIME text (CRLF).
        [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary],
    )
    return Signature(
        der=der, subject=certificate.subject.rfc4514_string(), certificate_pem=_pem(certificate)
    )


def check_pkcs12(pkcs12: bytes, pin: str, trust: Trust, now: datetime) -> CheckedCertificate:
    """Open `pkcs12` with `pin` and check its certificate may sign now; return it
    encrypted again as the index keeps it (PBES2/AES-256 under the argon2id-stretched PIN).

    Raises:
        WrongPin, CertificateRefused, ValueError (a PIN too weak to keep: see check_pin).
    """
    key, certificate, carried = _open(pkcs12, pin)
    chain = trust.check(certificate, now, carried)
    check_pin(pin)
    return CheckedCertificate(
        subject=certificate.subject.rfc4514_string(),
        certificate_pem=_pem(certificate),
        not_after=certificate.not_valid_after_utc,
        pkcs12=_protect(key, certificate, chain[1:], pin, None, kept=True),
    )


def verify(content: bytes, der: bytes, trust: Trust, *, at: datetime | None = None) -> str:
    """The signer's subject (RFC 4514) if `der` is a valid CMS signature of `content` by a
    certificate that chains to `trust`, checked with ``openssl cms -verify``.

    Args:
        at: the moment the certificates must be valid at (the signing time, to check an
            old report); default now.

    Raises:
        SignatureInvalid, CertificateRefused (the signer has no signing key usage),
        SigningUnavailable.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SigningUnavailable("openssl is needed to verify signatures and is not installed")
    if not trust.anchors:
        raise SignatureInvalid(f"there is no report-signing CA to verify with ({trust.path})")
    with tempfile.TemporaryDirectory(prefix="pacs-cms-") as folder:
        tmp = Path(folder)
        (tmp / "content").write_bytes(content)
        (tmp / "signature.p7s").write_bytes(der)
        (tmp / "anchors.pem").write_bytes(trust.pem())
        command = [
            openssl, "cms", "-verify", "-binary", "-inform", "DER",
            "-in", str(tmp / "signature.p7s"), "-content", str(tmp / "content"),
            "-CAfile", str(tmp / "anchors.pem"), "-no-CApath", "-no-CAstore",
            "-purpose", "any", "-signer", str(tmp / "signer.pem"), "-out", os.devnull,
        ]  # fmt: skip
        if at is not None:
            command += ["-attime", str(int(_aware(at).timestamp()))]
        try:
            done = subprocess.run(  # noqa: S603 (a fixed command, no shell)
                command, capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SigningUnavailable(f"openssl cms -verify did not run: {exc}") from None
        if done.returncode != 0:
            said = [line for line in done.stderr.splitlines() if line.strip()]
            raise SignatureInvalid(
                "the signature does not verify: "
                + (said[-1] if said else f"exit {done.returncode}")
            )
        signer = x509.load_pem_x509_certificates((tmp / "signer.pem").read_bytes())[0]
    _key_usage(signer)
    return signer.subject.rfc4514_string()


@dataclass(frozen=True, slots=True)
class LocalCa:
    """The archive's own report-signing CA: an EC P-256 key and a 10-year certificate in
    one folder (``ca.pem``, ``ca.key`` readable by the archive's user only)."""

    CERTIFICATE = "ca.pem"
    KEY = "ca.key"

    directory: Path
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)

    @property
    def certificate_path(self) -> Path:
        return self.directory / self.CERTIFICATE

    @classmethod
    def open_or_create(cls, directory: Path, now: datetime | None = None) -> "LocalCa":
        """The CA in `directory`, made there first if there is none (atomically: two
        processes doing this at once end with the same CA)."""
        if not (directory / cls.CERTIFICATE).exists():
            _create_ca(directory, _aware(now or datetime.now(UTC)))
        key = serialization.load_pem_private_key((directory / cls.KEY).read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{directory / cls.KEY} is not an EC private key")
        certificate = x509.load_pem_x509_certificate((directory / cls.CERTIFICATE).read_bytes())
        return cls(directory=directory, certificate=certificate, key=key)

    def issue(
        self,
        user_name: str,
        display_name: str,
        pin: str,
        days: int = 730,
        now: datetime | None = None,
    ) -> bytes:
        """A new key and certificate for `user_name` (the UID attribute), who signs as
        `display_name` (the CN, e.g. ``Trần Thị Lan``), as a PKCS#12 encrypted under `pin`
        with the CA's certificate; valid for `days`, and never beyond the CA.

        Raises:
            ValueError: a PIN too weak (check_pin), a display name not 1-64 characters.
        """
        check_pin(pin)
        if not 1 <= len(display_name) <= 64:
            raise ValueError("a display name has 1 to 64 characters")
        if days < 1:
            raise ValueError("a certificate is valid for a day at least")
        now = _aware(now or datetime.now(UTC))
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, display_name),
                x509.NameAttribute(NameOID.USER_ID, user_name),
            ]
        )
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW)
            .not_valid_after(min(now + timedelta(days=days), self.certificate.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(signing=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        return _protect(key, certificate, [self.certificate], pin, user_name)


def _create_ca(directory: Path, now: datetime) -> None:
    """Write the CA into a new sibling folder, then rename it into place."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOCAL_CA_NAME)])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW)
            .not_valid_after(now + timedelta(days=3652))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(signing=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        descriptor = os.open(building / LocalCa.KEY, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(key_pem)
            os.fsync(file.fileno())
        (building / LocalCa.CERTIFICATE).write_bytes(_pem(certificate).encode())
        building.chmod(0o755)
        try:
            os.rename(building, directory)  # replaces only a missing or empty folder
        except OSError:
            if not (directory / LocalCa.CERTIFICATE).exists():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _usage(*, signing: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signing,
        content_commitment=signing,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not signing,
        crl_sign=not signing,
        encipher_only=False,
        decipher_only=False,
    )


def _key_usage(certificate: x509.Certificate) -> None:
    who = certificate.subject.rfc4514_string()
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise CertificateRefused(
            f"the certificate of {who} has no key usage: a signing certificate needs "
            "digitalSignature or nonRepudiation"
        ) from None
    if not (usage.digital_signature or usage.content_commitment):
        raise CertificateRefused(
            f"the certificate of {who} may not sign documents (its key usage has neither "
            "digitalSignature nor nonRepudiation)"
        )


def _open(
    data: bytes, pin: str
) -> tuple[
    rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, x509.Certificate, list[x509.Certificate]
]:
    password = pin.encode()
    if data.startswith(KEPT):
        salt, data = data[len(KEPT) : len(KEPT) + 16], data[len(KEPT) + 16 :]
        password = _stretch(pin, salt)
    try:
        key, certificate, carried = pkcs12.load_key_and_certificates(data, password)
    except ValueError:
        raise WrongPin("the PIN does not open this signing certificate") from None
    if key is None or certificate is None:
        raise CertificateRefused("the PKCS#12 file holds no private key with its certificate")
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CertificateRefused(
            f"a {type(key).__name__} cannot sign CMS here: RSA or EC keys only"
        )
    if key.public_key() != certificate.public_key():
        raise CertificateRefused("the PKCS#12 file's private key is not its certificate's")
    return key, certificate, carried


def _stretch(pin: str, salt: bytes) -> bytes:
    """The PKCS#12 password a kept file is encrypted under: argon2id of the PIN."""
    raw = hash_secret_raw(pin.encode(), salt, type=Type.ID, **_ARGON2)
    return base64.b64encode(raw)


def _protect(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    certificate: x509.Certificate,
    issuers: Sequence[x509.Certificate],
    pin: str,
    name: str | None,
    *,
    kept: bool = False,
) -> bytes:
    """A PKCS#12 of the key and certificates under `pin`; `kept`: as the index keeps it,
    under the argon2id-stretched PIN behind the KEPT header and its salt."""
    salt = secrets.token_bytes(16)
    password = _stretch(pin, salt) if kept else pin.encode()
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(PKCS12_KDF_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password)
    )
    data = pkcs12.serialize_key_and_certificates(
        name.encode() if name else None, key, certificate, list(issuers), encryption
    )
    return KEPT + salt + data if kept else data


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
