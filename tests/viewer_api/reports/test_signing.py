"""A report signed with the radiologist's certificate, as a verifier outside the archive
checks it: the real `openssl cms -verify` over the canonical bytes with the CA's PEM file;
and the certificates the archive refuses to sign with (wrong PIN, another CA, expired, not
for signing)."""

import os
import shutil
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from tests.viewer_api.reports import samples
from viewer_api import ApiSettings
from viewer_api.reports.document import ReportDocument
from viewer_api.reports.signing import (
    KEPT,
    LOCAL_CA_NAME,
    CertificateRefused,
    LocalCa,
    SignatureInvalid,
    Trust,
    WrongPin,
    check_pkcs12,
    sign,
    trust_of,
    verify,
)

PIN = "24681357"  # a test PIN
NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _report(impression: str = "Không thấy tổn thương khu trú ở phổi.") -> ReportDocument:
    return samples.report(impression=impression, signed_at=NOW)


@pytest.fixture
def ca(tmp_path: Path) -> LocalCa:
    return LocalCa.open_or_create(tmp_path / "report-signing-ca", NOW - timedelta(days=1))


@pytest.fixture
def issued(ca: LocalCa) -> bytes:
    return ca.issue("lan.tran", "Trần Thị Lan", PIN, now=NOW - timedelta(hours=1))


def _openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def _cms_verify(
    folder: Path, content: bytes, der: bytes, ca_file: Path
) -> subprocess.CompletedProcess[str]:
    """The command a hospital's verifier runs, as the README gives it."""
    (folder / "report.json").write_bytes(content)
    (folder / "sig.p7s").write_bytes(der)
    return _openssl(
        "cms", "-verify", "-binary", "-inform", "DER", "-in", folder / "sig.p7s",
        "-content", folder / "report.json", "-CAfile", ca_file, "-out", os.devnull,
    )  # fmt: skip


def test_a_signed_report_verifies_with_openssl_and_names_the_radiologist(
    tmp_path: Path, ca: LocalCa, issued: bytes
) -> None:
    content = _report().canonical()
    assert "Không thấy tổn thương".encode() in content  # UTF-8, not \u escapes
    signature = sign(content, issued, PIN, Trust.load(ca.certificate_path), NOW)

    checked = _cms_verify(tmp_path, content, signature.der, ca.certificate_path)
    assert checked.returncode == 0, checked.stderr
    assert "Verification successful" in checked.stderr
    assert signature.subject == "UID=lan.tran,CN=Trần Thị Lan"
    assert verify(content, signature.der, Trust.load(ca.certificate_path)) == signature.subject
    certificate = x509.load_pem_x509_certificate(signature.certificate_pem.encode())
    assert certificate.subject.get_attributes_for_oid(NameOID.USER_ID)[0].value == "lan.tran"


def test_the_signature_is_detached_sha256_with_signing_time_and_the_chain(
    tmp_path: Path, ca: LocalCa, issued: bytes
) -> None:
    signature = sign(_report().canonical(), issued, PIN, Trust.load(ca.certificate_path), NOW)
    (tmp_path / "sig.p7s").write_bytes(signature.der)
    printed = _openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", tmp_path / "sig.p7s")
    assert printed.returncode == 0, printed.stderr
    assert "signingTime" in printed.stdout
    assert "eContent: <ABSENT>" in printed.stdout  # detached: the report is not inside
    assert "sha256" in printed.stdout
    assert "UID=lan.tran" in printed.stdout  # the signer's certificate
    assert f"subject: CN={LOCAL_CA_NAME}" in printed.stdout  # the CA travels with it


def test_a_changed_report_does_not_verify(tmp_path: Path, ca: LocalCa, issued: bytes) -> None:
    trust = Trust.load(ca.certificate_path)
    signature = sign(_report().canonical(), issued, PIN, trust, NOW)
    tampered = _report(impression="Nốt mờ 8 mm thùy trên phổi phải.").canonical()

    checked = _cms_verify(tmp_path, tampered, signature.der, ca.certificate_path)
    assert checked.returncode != 0
    assert "Verification successful" not in checked.stderr
    with pytest.raises(SignatureInvalid, match="does not verify"):
        verify(tampered, signature.der, trust)


def test_a_report_does_not_verify_against_another_ca_of_the_same_name(
    tmp_path: Path, ca: LocalCa, issued: bytes
) -> None:
    content = _report().canonical()
    signature = sign(content, issued, PIN, Trust.load(ca.certificate_path), NOW)
    impostor = LocalCa.open_or_create(tmp_path / "impostor", NOW - timedelta(days=1))
    assert impostor.certificate.subject == ca.certificate.subject

    checked = _cms_verify(tmp_path, content, signature.der, impostor.certificate_path)
    assert checked.returncode != 0
    with pytest.raises(SignatureInvalid):
        verify(content, signature.der, Trust.load(impostor.certificate_path))


def test_a_wrong_pin_is_refused_403(ca: LocalCa, issued: bytes) -> None:
    with pytest.raises(WrongPin) as refused:
        sign(b"{}", issued, PIN + "0", Trust.load(ca.certificate_path), NOW)
    assert refused.value.status == 403
    assert PIN not in refused.value.reason


def test_a_certificate_of_another_ca_is_refused(tmp_path: Path, ca: LocalCa) -> None:
    other = LocalCa.open_or_create(tmp_path / "other", NOW - timedelta(days=1))
    foreign = other.issue("lan.tran", "Trần Thị Lan", PIN, now=NOW - timedelta(hours=1))
    with pytest.raises(CertificateRefused, match="does not chain to the report-signing CAs") as no:
        sign(b"{}", foreign, PIN, Trust.load(ca.certificate_path), NOW)
    assert no.value.status == 422


def test_an_expired_or_not_yet_valid_certificate_is_refused(ca: LocalCa) -> None:
    trust = Trust.load(ca.certificate_path)
    old = ca.issue("lan.tran", "Trần Thị Lan", PIN, days=30, now=NOW - timedelta(days=60))
    with pytest.raises(CertificateRefused, match="expired on"):
        sign(b"{}", old, PIN, trust, NOW)
    fresh = ca.issue("lan.tran", "Trần Thị Lan", PIN, now=NOW)
    with pytest.raises(CertificateRefused, match="not valid before"):
        sign(b"{}", fresh, PIN, trust, NOW - timedelta(days=1))


def test_a_certificate_not_for_signing_is_refused(ca: LocalCa) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(False, False, True, False, False, False, False, False, False)
    certificate = _certificate("TLS only", key, ca.certificate.subject, ca.key, usage=usage)
    bundle = _pkcs12(key, certificate, [ca.certificate])
    with pytest.raises(CertificateRefused, match="neither digitalSignature nor nonRepudiation"):
        sign(b"{}", bundle, PIN, Trust.load(ca.certificate_path), NOW)
    bare = _pkcs12(key, _certificate("No usage", key, ca.certificate.subject, ca.key), [])
    with pytest.raises(CertificateRefused, match="has no key usage"):
        sign(b"{}", bare, PIN, Trust.load(ca.certificate_path), NOW)


def test_an_intermediate_ca_in_the_pkcs12_completes_the_chain(tmp_path: Path) -> None:
    """A province CA under the government root: the PKCS#12 carries the intermediate, the
    verifier holds only the root."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Root CA Việt Nam (test)")])
    root = _certificate(root_name, root_key, root_name, root_key, ca=True)
    middle_key = ec.generate_private_key(ec.SECP256R1())
    middle = _certificate("CA Sở Y tế Lâm Đồng (test)", middle_key, root_name, root_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _certificate("Trần Thị Lan", key, middle.subject, middle_key, usage=_SIGNING)
    (tmp_path / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    trust = Trust.load(tmp_path / "root.pem")
    content = _report().canonical()

    signature = sign(content, _pkcs12(key, leaf, [middle]), PIN, trust, NOW)
    checked = _cms_verify(tmp_path, content, signature.der, tmp_path / "root.pem")
    assert checked.returncode == 0, checked.stderr
    assert verify(content, signature.der, trust) == "CN=Trần Thị Lan"
    with pytest.raises(CertificateRefused, match="does not chain"):  # without it, no chain
        sign(content, _pkcs12(key, leaf, []), PIN, trust, NOW)


def test_an_imported_pkcs12_is_kept_under_the_stretched_pin(ca: LocalCa, issued: bytes) -> None:
    """The kept file opens with the PIN only through argon2id: the PKCS#12 inside does not
    open with the PIN itself, so a copy of the index does not test PINs at PKCS#12 speed."""
    trust = Trust.load(ca.certificate_path)
    checked = check_pkcs12(issued, PIN, trust, NOW)
    assert checked.subject == "UID=lan.tran,CN=Trần Thị Lan"
    assert checked.not_after > NOW + timedelta(days=700)
    assert checked.pkcs12.startswith(KEPT)
    inner = checked.pkcs12[len(KEPT) + 16 :]
    with pytest.raises(ValueError, match="PKCS12"):
        pkcs12.load_key_and_certificates(inner, PIN.encode())
    again = check_pkcs12(issued, PIN, trust, NOW)
    assert again.pkcs12[: len(KEPT) + 16] != checked.pkcs12[: len(KEPT) + 16]  # salt of its own
    signature = sign(b"{}", checked.pkcs12, PIN, trust, NOW)
    assert signature.subject == checked.subject
    with pytest.raises(WrongPin):
        sign(b"{}", checked.pkcs12, "not the pin", trust, NOW)
    with pytest.raises(WrongPin):
        check_pkcs12(issued, "not the pin", trust, NOW)


def test_a_weak_pin_is_refused(ca: LocalCa) -> None:
    with pytest.raises(ValueError, match="at least 8 characters"):
        ca.issue("lan.tran", "Trần Thị Lan", "1234")
    with pytest.raises(ValueError, match="ASCII"):
        ca.issue("lan.tran", "Trần Thị Lan", "mật-khẩu-dài")


def test_the_local_ca_is_made_once_with_a_private_key_file(tmp_path: Path, ca: LocalCa) -> None:
    again = LocalCa.open_or_create(ca.directory, NOW)
    assert again.certificate == ca.certificate
    assert (ca.directory / LocalCa.KEY).stat().st_mode & 0o777 == 0o600
    constraints = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.value.ca
    assert ca.certificate.not_valid_after_utc - ca.certificate.not_valid_before_utc > timedelta(
        days=3650
    )
    assert [p.name for p in tmp_path.iterdir()] == ["report-signing-ca"]  # no leftovers


def test_an_issued_certificate_signs_and_has_no_extended_key_usage(
    ca: LocalCa, issued: bytes
) -> None:
    _, certificate, _ = pkcs12.load_key_and_certificates(issued, PIN.encode())
    assert certificate is not None
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert usage.content_commitment
    with pytest.raises(x509.ExtensionNotFound):
        certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert certificate.issuer == ca.certificate.subject


def test_the_trust_anchors_come_from_the_setting_or_the_local_ca(
    tmp_path: Path, ca: LocalCa, issued: bytes
) -> None:
    none_yet = trust_of(ApiSettings(_env_file=None), tmp_path / "elsewhere")  # type: ignore[call-arg]
    assert none_yet.anchors == ()
    with pytest.raises(CertificateRefused, match="no report-signing CA yet"):
        sign(b"{}", issued, PIN, none_yet, NOW)
    local = trust_of(ApiSettings(_env_file=None), tmp_path)  # type: ignore[call-arg]
    assert local.anchors == (ca.certificate,)
    province = tmp_path / "province-ca.pem"
    province.write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    settings = ApiSettings(report_signing_ca=province, _env_file=None)  # type: ignore[call-arg]
    assert trust_of(settings, tmp_path / "elsewhere").path == province


_SIGNING = x509.KeyUsage(True, True, False, False, False, False, False, False, False)
_CA_USAGE = x509.KeyUsage(False, False, False, False, False, True, True, False, False)


def _certificate(
    subject: str | x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    usage: x509.KeyUsage | None = None,
) -> x509.Certificate:
    if isinstance(subject, str):
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=10))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = _CA_USAGE
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


def _pkcs12(
    key: ec.EllipticCurvePrivateKey,
    certificate: x509.Certificate,
    carried: Sequence[x509.Certificate],
) -> bytes:
    return pkcs12.serialize_key_and_certificates(
        None,
        key,
        certificate,
        list(carried),
        serialization.BestAvailableEncryption(PIN.encode()),
    )
