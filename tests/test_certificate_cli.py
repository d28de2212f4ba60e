"""`pacs user certificate` as an administrator uses it: issue from the archive's own CA,
import from a province CA, show, revoke; and what a report signed with the result looks
like to a verifier holding the CA file the command printed."""

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from storage import Archive, StorageSettings
from storage.certificates import current_certificate, list_certificates
from storage.users import add_user
from tests.conftest import audit_row
from viewer_api import ApiSettings
from viewer_api.reports.signing import Trust, sign, trust_of

PIN = "13572468"  # a test PIN
PASSWORD = "mật khẩu dài đủ 12"  # noqa: S105 (a test password)
REPORT = "Kết luận: không thấy bất thường.".encode()

pytestmark = [
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl"),
    pytest.mark.parametrize("storage_settings", ["embedded"], indirect=True),
]


def _certificate(
    data_dir: Path, *args: str | Path, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    settings = {"PACS_DATA_DIR": str(data_dir), "PACS_MIN_FREE_MB": "0", "COLUMNS": "200"}
    clean = {k: v for k, v in os.environ.items() if k != "PACS_REPORT_SIGNING_CA"}
    return subprocess.run(
        [sys.executable, "-m", "pacs", "user", "certificate", *map(str, args)],
        env={**clean, **settings, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _openssl_verifies(tmp_path: Path, der: bytes, ca_file: Path) -> bool:
    (tmp_path / "report.json").write_bytes(REPORT)
    (tmp_path / "report.p7s").write_bytes(der)
    done = subprocess.run(
        ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", tmp_path / "report.p7s",
         "-content", tmp_path / "report.json", "-CAfile", ca_file, "-out", os.devnull],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done.returncode == 0 and "Verification successful" in done.stderr


def test_issue_show_and_revoke_a_radiologists_certificate(
    archive: Archive, storage_settings: StorageSettings, tmp_path: Path
) -> None:
    add_user(archive, "lan.tran", role="radiologist", hospital=None, password=PASSWORD, by="t")
    data_dir = storage_settings.data_dir

    issued = _certificate(
        data_dir, "issue", "lan.tran", "--display-name", "Trần Thị Lan", "--pin-stdin",
        stdin=PIN + "\n",
    )  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    assert "UID=lan.tran,CN=Trần Thị Lan" in issued.stdout
    ca_file = data_dir.resolve() / "report-signing-ca" / "ca.pem"
    assert str(ca_file) in issued.stdout
    assert PIN not in issued.stdout + issued.stderr
    printed = _certificate(data_dir, "ca")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == str(ca_file)

    kept = current_certificate(archive, "lan.tran")
    assert kept is not None
    assert kept.pkcs12 is not None
    assert kept.subject == "UID=lan.tran,CN=Trần Thị Lan"
    signature = sign(REPORT, kept.pkcs12, PIN, Trust.load(ca_file), datetime.now(UTC))
    assert _openssl_verifies(tmp_path, signature.der, ca_file)
    assert audit_row(archive, action="certificate-add").detail.startswith("lan.tran: UID=")

    again = _certificate(data_dir, "issue", "lan.tran", "--pin-stdin", stdin=PIN + "\n")
    assert again.returncode == 0, again.stderr
    history = list_certificates(archive, "lan.tran")
    assert [row.active for row in history] == [False, True]  # one active certificate a user
    assert all(row.pkcs12 is None for row in history)  # a listing carries no keys
    shown = _certificate(data_dir, "show", "lan.tran")
    assert shown.returncode == 0, shown.stderr
    assert "revoked" in shown.stdout
    assert "active" in shown.stdout

    revoked = _certificate(data_dir, "revoke", "lan.tran")
    assert revoked.returncode == 0, revoked.stderr
    assert "Revoked the signing certificate of lan.tran" in revoked.stdout
    assert current_certificate(archive, "lan.tran") is None
    assert "active" not in _certificate(data_dir, "show", "lan.tran").stdout
    assert audit_row(archive, action="certificate-revoke").actor


def test_only_a_radiologist_or_an_admin_gets_a_certificate(
    archive: Archive, storage_settings: StorageSettings
) -> None:
    add_user(archive, "ktv.minh", role="technologist", hospital="BVDKLD", password=PASSWORD, by="t")
    data_dir = storage_settings.data_dir

    refused = _certificate(data_dir, "issue", "ktv.minh", "--pin-stdin", stdin=PIN + "\n")
    assert refused.returncode == 1
    assert "only a radiologist or an admin signs reports" in refused.stderr
    nobody = _certificate(data_dir, "issue", "nobody", "--pin-stdin", stdin=PIN + "\n")
    assert nobody.returncode == 1
    assert "No user called nobody" in nobody.stderr
    assert current_certificate(archive, "ktv.minh") is None
    assert _certificate(data_dir, "show", "ktv.minh").returncode == 1
    add_user(archive, "bs.hoa", role="radiologist", hospital=None, password=PASSWORD, by="t")
    weak = _certificate(data_dir, "issue", "bs.hoa", "--pin-stdin", stdin="1234\n")
    assert weak.returncode == 1
    assert "at least 8 characters" in weak.stderr


def test_import_from_the_province_ca_and_refuse_a_foreign_one(
    archive: Archive, storage_settings: StorageSettings, tmp_path: Path
) -> None:
    add_user(archive, "bs.hoa", role="radiologist", hospital=None, password=PASSWORD, by="t")
    data_dir = storage_settings.data_dir
    province_key, province = _ca("CA Sở Y tế Lâm Đồng (test)")
    province_pem = tmp_path / "province-ca.pem"
    province_pem.write_bytes(province.public_bytes(serialization.Encoding.PEM))
    env = {"PACS_REPORT_SIGNING_CA": str(province_pem)}
    (tmp_path / "hoa.p12").write_bytes(_issue(province_key, province, "Lê Văn Hòa"))
    foreign_key, foreign = _ca("Some other CA")
    (tmp_path / "foreign.p12").write_bytes(_issue(foreign_key, foreign, "Lê Văn Hòa"))

    not_issued = _certificate(data_dir, "issue", "bs.hoa", "--pin-stdin", stdin=PIN, env=env)
    assert not_issued.returncode == 1
    assert "PACS_REPORT_SIGNING_CA names another CA" in not_issued.stderr
    wrong_pin = _certificate(
        data_dir, "import", "bs.hoa", "--p12", tmp_path / "hoa.p12", "--pin-stdin",
        stdin="not the PIN\n", env=env,
    )  # fmt: skip
    assert wrong_pin.returncode == 1
    assert "the PIN does not open" in wrong_pin.stderr
    refused = _certificate(
        data_dir, "import", "bs.hoa", "--p12", tmp_path / "foreign.p12", "--pin-stdin",
        stdin=PIN + "\n", env=env,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "does not chain to the report-signing CAs" in refused.stderr
    assert current_certificate(archive, "bs.hoa") is None

    imported = _certificate(
        data_dir, "import", "bs.hoa", "--p12", tmp_path / "hoa.p12", "--pin-stdin",
        stdin=PIN + "\n", env=env,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert "CN=Lê Văn Hòa" in imported.stdout
    assert _certificate(data_dir, "ca", env=env).stdout.strip() == str(province_pem)
    kept = current_certificate(archive, "bs.hoa")
    assert kept is not None
    assert kept.pkcs12 is not None
    settings = ApiSettings(report_signing_ca=province_pem, _env_file=None)  # type: ignore[call-arg]
    trust = trust_of(settings, data_dir)
    signature = sign(REPORT, kept.pkcs12, PIN, trust, datetime.now(UTC))
    assert signature.subject == "CN=Lê Văn Hòa"
    assert _openssl_verifies(tmp_path, signature.der, province_pem)
    assert not (data_dir / "report-signing-ca").exists()  # no local CA was made


def _ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .sign(key, hashes.SHA384())
    )
    return key, certificate


def _issue(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, name: str) -> bytes:
    """A PKCS#12 as a CA hands it out: key, certificate and the CA, under the PIN."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(
            x509.KeyUsage(True, True, False, False, False, False, False, False, False), True
        )
        .sign(ca_key, hashes.SHA384())
    )
    return pkcs12.serialize_key_and_certificates(
        b"hoa", key, certificate, [ca], serialization.BestAvailableEncryption(PIN.encode())
    )
