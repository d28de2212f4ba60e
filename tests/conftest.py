"""Shared fixtures: an archive in a temporary folder, a live DICOM node, DCMTK clients."""

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from pynetdicom.association import Association

from dicom_node import DicomSettings
from dicom_node.node import DicomNode
from dicom_node.transport import ArchiveAE
from storage import Archive, PeerRegistry, StorageSettings
from tests.reliability.figures import pytest_configure, pytest_terminal_summary

CI = os.environ.get("CI", "").lower() == "true"
__all__ = ["pytest_configure", "pytest_terminal_summary"]  # the reliability figures' hooks
OUR_AET = "DALAT"
SCU_AET = "TESTSCU"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def need(tool: str, package: str = "dcmtk") -> str:
    """The path of a tool from a Debian package (DCMTK's by default); skip without it
    locally, fail without it in CI."""
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} (Debian package {package}) is not installed"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    try:
        engine = sqlalchemy.create_engine(POSTGRES)
        with engine.connect():
            pass
        engine.dispose()
    except sqlalchemy.exc.OperationalError as exc:
        if CI:
            pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is needed in CI: {exc}")
        return False
    return True


@pytest.fixture
def postgres_url(postgres_available: bool) -> Iterator[str]:
    """A schema of its own in the `test` database, dropped afterwards."""
    if not postgres_available:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = sqlalchemy.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An S3-compatible server on 127.0.0.1 (moto's), spoken to only over HTTP.

    The standard AWS variables point boto3 at it, so the same tests run against MinIO or
    Ceph RGW by setting AWS_ENDPOINT_URL and credentials instead.
    """
    external = os.environ.get("PACS_TEST_S3_ENDPOINT")
    if external:
        yield external
        return
    beside = Path(sys.executable).parent / "moto_server"  # the virtual environment's
    server = str(beside) if beside.exists() else shutil.which("moto_server")
    if server is None:
        message = "moto_server (pip install 'moto[server]') is not installed"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    process = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(10)
        log.close()


@pytest.fixture
def s3_url(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the test S3 server, as a blob URL with a prefix."""
    import boto3

    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": os.environ.get("PACS_TEST_S3_KEY", "testing"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("PACS_TEST_S3_SECRET", "testing"),
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    bucket = f"dalat-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/archive"


BACKENDS = [
    pytest.param("embedded", id="sqlite+folder"),
    pytest.param("scale", id="postgresql+s3", marks=[pytest.mark.postgres, pytest.mark.s3]),
]


@pytest.fixture(params=BACKENDS)
def storage_settings(request: pytest.FixtureRequest, tmp_path: Path) -> StorageSettings:
    """The embedded default, and the province-scale one: PostgreSQL and S3."""
    database_url = blob_url = None
    if request.param == "scale":
        database_url = request.getfixturevalue("postgres_url")
        blob_url = request.getfixturevalue("s3_url")
    return StorageSettings(
        data_dir=tmp_path / "archive",
        database_url=database_url,
        blob_url=blob_url,
        min_free_mb=0,
        _env_file=None,
    )


@pytest.fixture
def archive(storage_settings: StorageSettings) -> Iterator[Archive]:
    archive = Archive.open(storage_settings)
    yield archive
    archive.close()


@pytest.fixture
def peers(archive: Archive) -> PeerRegistry:
    registry = PeerRegistry(archive.engine)
    registry.add(
        name="test-scu", aet=SCU_AET, host="127.0.0.1", port=free_port(), hospital="BVDKLD"
    )
    return registry


@pytest.fixture
def dicom_settings() -> DicomSettings:
    return DicomSettings(aet=OUR_AET, dicom_port=0, commitment_retry_seconds=0.5, _env_file=None)


@pytest.fixture
def node(
    archive: Archive, peers: PeerRegistry, dicom_settings: DicomSettings
) -> Iterator[DicomNode]:
    node = DicomNode(archive, dicom_settings, host="127.0.0.1")
    node.start()
    yield node
    node.stop()


def associate(
    port: int,
    *contexts: str,
    ae_title: str = SCU_AET,
    called: str = OUR_AET,
    transfer_syntaxes: list[str] | None = None,
    timeout: float = 30,
    **kwargs: object,
) -> Association:
    # ArchiveAE: pynetdicom's own requestor leaks its socket when the peer drops the connection.
    ae = ArchiveAE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for context in contexts:
        if transfer_syntaxes:
            ae.add_requested_context(context, transfer_syntaxes)
        else:
            ae.add_requested_context(context)
    return ae.associate("127.0.0.1", port, ae_title=called, **kwargs)  # type: ignore[arg-type]


def run_pacs(
    *args: str | Path, data_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`pacs ARGS...` as an administrator types it, on the archive in `data_dir`."""
    settings = {"PACS_DATA_DIR": str(data_dir), "PACS_MIN_FREE_MB": "0", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "pacs", *map(str, args)],
        env={**os.environ, **settings, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def overwrite_blob(archive: Archive, key: str, data: bytes) -> None:
    """Change a blob's bytes behind the archive's back, as a failing disk would."""
    from storage.blobs import FilesystemBlobStore
    from storage.blobs.s3 import S3BlobStore
    from storage.blobs.spool import SpooledBlobStore

    blobs = archive.blobs
    if isinstance(blobs, SpooledBlobStore):
        assert blobs.drain(), "the spool did not drain"
        blobs = blobs.remote
    if isinstance(blobs, FilesystemBlobStore):
        path = blobs.path_of(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    else:
        import boto3

        assert isinstance(blobs, S3BlobStore)
        boto3.client("s3").put_object(Bucket=blobs.bucket, Key=blobs.object_key(key), Body=data)


def blob_bytes(archive: Archive, key: str) -> bytes:
    with archive.blobs.open(key) as blob:
        return blob.read()


def audit_row(archive: Archive, **where: str) -> Any:
    """The audit row matching `where`, waiting for it: such rows are queued, not awaited."""
    from sqlalchemy import select

    from storage.index.tables import AuditEvent

    query = select(AuditEvent).where(
        *(getattr(AuditEvent, column) == value for column, value in where.items())
    )
    deadline = time.monotonic() + 5
    while True:
        with archive.read() as conn:
            row = conn.execute(query).first()
        if row is not None:
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"no audit row with {where}")
        time.sleep(0.05)
