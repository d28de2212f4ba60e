"""Shared fixtures: an archive in a temporary folder, a live DICOM node, DCMTK clients."""

import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom.association import Association

from dicom_node import DicomSettings
from dicom_node.node import DicomNode
from dicom_node.transport import ArchiveAE
from storage import Archive, PeerRegistry, StorageSettings

CI = os.environ.get("CI", "").lower() == "true"
OUR_AET = "DALAT"
SCU_AET = "TESTSCU"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def need(tool: str) -> str:
    """The path of a DCMTK tool; skip without it locally, fail without it in CI."""
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} (Debian package dcmtk) is not installed"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def storage_settings(tmp_path: Path) -> StorageSettings:
    return StorageSettings(data_dir=tmp_path / "archive", min_free_mb=0, _env_file=None)


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
