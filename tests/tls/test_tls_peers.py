"""DICOM TLS on the associations the archive opens itself, to peers registered ``--tls``:
C-MOVE sub-operations, storage commitment reports and ``pacs export --to``.

The peers are pynetdicom SCPs listening with TLS, their certificates from a throwaway test
CA (``tests.tls_certs``); every association is real, over loopback. The test CA's client
certificate (CN=TESTSCU) stands for the archive's own ``PACS_TLS_CERTIFICATE``.
"""

import logging
import os
import queue
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelMove as StudyRootMove,
)
from sqlalchemy import text

from dicom_node import DicomSettings
from dicom_node.node import DicomNode
from dicom_node.tls import server_context
from storage import Archive, PeerRegistry, Source, StorageSettings, stage_file
from storage.index.engine import MIGRATIONS, create_index_engine
from tests import factories
from tests.conftest import OUR_AET, SCU_AET, associate, audit_row, free_port
from tests.tls.certs import Pki

DEST_AET = "TLSDEST"
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
SALT = b"a-test-salt-of-enough-bytes"


@pytest.fixture
def dicom_settings(pki: Pki) -> DicomSettings:
    """No TLS port of our own: TLS settings serve the associations we open as well."""
    return DicomSettings(
        aet=OUR_AET,
        dicom_port=0,
        tls_certificate=pki.client_cert,
        tls_private_key=pki.client_key,
        tls_ca_certificates=pki.ca,
        commitment_retry_seconds=0.5,
        acse_timeout=5,
        _env_file=None,
    )


class TlsPeer:
    """A storage SCP (and storage commitment SCU) that listens with TLS only: keeps what it
    receives and, for each C-STORE, the TLS version and the client certificate's name."""

    def __init__(
        self, aet: str, pki: Pki, *, host: str = "127.0.0.1", client_certificate: bool = True
    ) -> None:
        self.received: dict[str, Dataset] = {}
        self.sessions: list[tuple[str | None, str]] = []
        self.reports: queue.Queue[tuple[int, Dataset]] = queue.Queue()
        ae = AE(ae_title=aet)
        ae.add_supported_context(Verification)
        ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        context = server_context(
            certificate=pki.server_cert,
            private_key=pki.server_key,
            ca_certificates=pki.ca,
            require_client_certificate=client_certificate,
        )
        self.host, self.port = host, free_port()
        self.server = ae.start_server(
            (host, self.port),
            block=False,
            ssl_context=context,
            evt_handlers=[
                (evt.EVT_C_STORE, self._store),
                (evt.EVT_N_EVENT_REPORT, self._report),
            ],
        )

    def _store(self, event: Event) -> int:
        sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
        if isinstance(sock, ssl.SSLSocket):
            subject = (sock.getpeercert() or {}).get("subject", ())
            names = [value for rdn in subject for key, value in rdn if key == "commonName"]
            self.sessions.append((sock.version(), ", ".join(names)))
        else:
            self.sessions.append((None, ""))
        ds = event.dataset
        self.received[str(ds.SOPInstanceUID)] = ds
        return 0x0000

    def _report(self, event: Event) -> tuple[int, None]:
        self.reports.put((int(event.event_type), event.event_information))
        return 0x0000, None

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def destination(peers: PeerRegistry, pki: Pki) -> Iterator[TlsPeer]:
    """A C-MOVE destination that speaks TLS only and requires a client certificate."""
    peer = TlsPeer(DEST_AET, pki)
    peers.add(name="tls-dest", aet=DEST_AET, host="127.0.0.1", port=peer.port, tls=True)
    yield peer
    peer.close()


@pytest.fixture
def study(node: DicomNode, tmp_path: Path) -> list[Dataset]:
    """Three CT instances, sent to the archive's plain port."""
    datasets = factories.ct_series(3)
    assoc = associate(node.port, CTImageStorage)
    for path in factories.write_all(datasets, tmp_path / "sent"):
        assert assoc.send_c_store(path).Status == 0
    assoc.release()
    return datasets


@pytest.fixture
def study_files(tmp_path: Path) -> list[Path]:
    return factories.write_all(factories.ct_series(2), tmp_path / "files")


def move(node: DicomNode, study_uid: str, destination: str = DEST_AET) -> list[Dataset]:
    """C-MOVE a study from a plain SCU; the statuses, the final one last."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    assoc = associate(node.port, StudyRootMove)
    statuses = [status for status, _ in assoc.send_c_move(ds, destination, StudyRootMove)]
    assoc.release()
    return statuses


def still_serving(node: DicomNode) -> None:
    assoc = associate(node.port, Verification)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()


# -- C-MOVE


def test_a_c_move_to_a_tls_destination_is_delivered_over_tls(
    node: DicomNode, study: list[Dataset], destination: TlsPeer, archive: Archive
) -> None:
    final = move(node, study[0].StudyInstanceUID)[-1]
    assert final.Status == 0x0000
    assert final.NumberOfCompletedSuboperations == 3
    assert sorted(destination.received) == sorted(ds.SOPInstanceUID for ds in study)
    for ds in study:
        assert destination.received[ds.SOPInstanceUID].PixelData == ds.PixelData
    # BCP 195: TLS 1.3 where both have it; our certificate presented, as it asked for one
    assert destination.sessions == [("TLSv1.3", "TESTSCU")] * 3
    audit = audit_row(archive, action="retrieve", outcome="started")
    assert audit.detail == f"C-MOVE to {DEST_AET}"


@pytest.mark.parametrize("stranger", ["other-ca", "other-host"])
def test_a_tls_destination_that_fails_our_check_gets_nothing_and_the_move_fails_a801(
    node: DicomNode,
    study: list[Dataset],
    peers: PeerRegistry,
    pki: Pki,
    other_pki: Pki,
    caplog: pytest.LogCaptureFixture,
    stranger: str,
) -> None:
    """Its certificate is from a CA ours did not sign, or does not name the host it is
    registered at (127.0.0.2 is loopback too, but the certificate names 127.0.0.1)."""
    if stranger == "other-ca":
        peer, why = TlsPeer(DEST_AET, other_pki), "("  # OpenSSL's words for it vary
    else:
        peer = TlsPeer(DEST_AET, pki, host="127.0.0.2")
        why = "(IP address mismatch, certificate is not valid for '127.0.0.2'.)"
    peers.add(name="tls-dest", aet=DEST_AET, host=peer.host, port=peer.port, tls=True)
    try:
        with caplog.at_level(logging.WARNING, logger="dicom_node"):
            statuses = move(node, study[0].StudyInstanceUID)
        assert [s.Status for s in statuses] == [0xA801]  # destination cannot be reached
        assert peer.received == {}
        sentence = (
            f"Could not open a TLS association to {DEST_AET} at {peer.host}:{peer.port}: its "
            "certificate did not pass the check against PACS_TLS_CA_CERTIFICATES (the system's "
            f"CAs when unset) and its registered host {why}"
        )
        assert [m for m in caplog.messages if m.startswith(sentence)]
        still_serving(node)
    finally:
        peer.close()


def test_a_tls_destination_with_our_tls_files_unusable_is_refused_a801_with_the_setting(
    archive: Archive,
    peers: PeerRegistry,
    study_files: list[Path],
    destination: TlsPeer,
    pki: Pki,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    missing = tmp_path / "missing-ca.pem"
    settings = DicomSettings(
        aet=OUR_AET,
        dicom_port=0,
        tls_certificate=pki.client_cert,
        tls_private_key=pki.client_key,
        tls_ca_certificates=missing,
        _env_file=None,
    )
    node = DicomNode(archive, settings, host="127.0.0.1")
    node.start()  # a TLS peer does not stop the start: it fails where it is used
    try:
        assoc = associate(node.port, CTImageStorage)
        for path in study_files:
            assert assoc.send_c_store(path).Status == 0
        assoc.release()
        study_uid = dcmread(study_files[0]).StudyInstanceUID
        with caplog.at_level(logging.WARNING, logger="dicom_node"):
            statuses = move(node, study_uid)
        assert [s.Status for s in statuses] == [0xA801]
        why = f"PACS_TLS_CA_CERTIFICATES ({missing}) cannot be read: No such file or directory"
        assert (
            f"Refused C-MOVE from {SCU_AET} (127.0.0.1): destination {DEST_AET} is a TLS peer, "
            f"but {why}"
        ) in caplog.messages
        audit = audit_row(archive, action="retrieve", outcome="refused")
        assert audit.detail == f"C-MOVE refused: destination {DEST_AET} is a TLS peer, but {why}"
        assert destination.received == {}
        still_serving(node)
    finally:
        node.stop()


# -- storage commitment


def test_a_commitment_report_to_a_tls_peer_arrives_over_tls(
    node: DicomNode, study: list[Dataset], peers: PeerRegistry, pki: Pki
) -> None:
    modality = TlsPeer(SCU_AET, pki)
    peers.remove("test-scu")
    peers.add(name="test-scu", aet=SCU_AET, host="127.0.0.1", port=modality.port, tls=True)
    try:
        request = Dataset()
        request.TransactionUID = generate_uid()
        references = []
        for ds in study:
            item = Dataset()
            item.ReferencedSOPClassUID = ds.SOPClassUID
            item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
            references.append(item)
        request.ReferencedSOPSequence = references
        assoc = associate(node.port, StorageCommitmentPushModel)
        status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
        assoc.release()  # so the report comes on a new association, which we open
        assert status.Status == 0
        event_type, report = modality.reports.get(timeout=15)
    finally:
        modality.close()
    assert event_type == 1  # all committed
    assert report.TransactionUID == request.TransactionUID
    assert len(report.ReferencedSOPSequence) == 3


# -- pacs remote add --tls, pacs export --to


def pacs(*args: str | Path, data_dir: Path, **env: str | Path) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PACS_TLS")}
    environment |= {"PACS_DATA_DIR": str(data_dir), "PACS_MIN_FREE_MB": "0", "COLUMNS": "400"}
    environment |= {f"PACS_{name.upper()}": str(value) for name, value in env.items()}
    return subprocess.run(
        [sys.executable, "-m", "pacs", *map(str, args)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_line(text: str) -> str:
    """Rich's output with its line wrapping undone."""
    return " ".join(text.split())


def test_pacs_export_to_a_tls_peer_sends_deidentified_instances_over_tls(
    archive: Archive, storage_settings: StorageSettings, pki: Pki, tmp_path: Path
) -> None:
    instances = factories.ct_series(2)
    for path in factories.write_all(instances, tmp_path / "in"):
        archive.store(stage_file(path, archive.staging_dir), source=Source("dimse", aet="CT1"))
    archive.close()
    research = TlsPeer("RESEARCH", pki)
    data = storage_settings.data_dir
    salt = tmp_path / "salt"
    salt.write_bytes(SALT)
    study_uid = instances[0].StudyInstanceUID
    ours = {"tls_certificate": pki.client_cert, "tls_private_key": pki.client_key}
    try:
        added = pacs(
            "remote", "add", "research", "--aet", "RESEARCH", "--host", "127.0.0.1",
            "--port", str(research.port), "--tls", data_dir=data,
        )  # fmt: skip
        listed = pacs("remote", "list", data_dir=data)
        sent = pacs(
            "export", study_uid, "--to", "research", "--salt-file", salt,
            data_dir=data, tls_ca_certificates=pki.ca, **ours,
        )  # fmt: skip
        unchecked = pacs(  # no CA of ours: the system's CAs do not know the test CA
            "export", study_uid, "--to", "research", "--salt-file", salt, data_dir=data, **ours
        )
        unusable = pacs(
            "export", study_uid, "--to", "research", "--salt-file", salt,
            data_dir=data, tls_ca_certificates=tmp_path / "missing.pem", **ours,
        )  # fmt: skip
    finally:
        research.close()
    assert added.returncode == 0, added.stderr
    assert f"Added research: RESEARCH at 127.0.0.1:{research.port} (DICOM TLS)" in added.stdout
    assert re.search(r"research\s*│\s*RESEARCH\s*│.*│\s*no\s*│\s*yes\s*│", listed.stdout)

    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert re.search(r"instances written\s*│\s*2\b", sent.stdout)
    assert "over DICOM TLS" in sent.stdout
    assert research.sessions == [("TLSv1.3", "TESTSCU")] * 2
    assert len(research.received) == 2
    for ds in research.received.values():
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.PatientName != instances[0].PatientName
        assert ds.SOPInstanceUID not in {i.SOPInstanceUID for i in instances}
    assert {ds.PixelData for ds in research.received.values()} == {ds.PixelData for ds in instances}

    where = f"RESEARCH at 127.0.0.1:{research.port}"
    assert unchecked.returncode == 1
    assert (
        f"The export to research broke off: no TLS association with {where}: its certificate "
        "did not pass the check against PACS_TLS_CA_CERTIFICATES (the system's CAs when unset) "
        "and its registered host ("
    ) in one_line(unchecked.stderr)
    assert unusable.returncode == 1
    assert (
        "The export to research broke off: RESEARCH is a TLS peer, but PACS_TLS_CA_CERTIFICATES "
        f"({tmp_path / 'missing.pem'}) cannot be read: No such file or directory"
    ) in one_line(unusable.stderr)
    assert len(research.received) == 2  # nothing more went out
    reopened = Archive.open(storage_settings)
    try:
        row = audit_row(reopened, action="export", outcome="success")
    finally:
        reopened.close()
    assert f"de-identified to research (RESEARCH@127.0.0.1:{research.port}, TLS)" in row.detail


# -- the schema


def test_peers_registered_before_the_upgrade_stay_plain(tmp_path: Path) -> None:
    engine = create_index_engine(f"sqlite:///{tmp_path / 'index.db'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0006")
            connection.execute(
                text(
                    "INSERT INTO remote_nodes (name, aet, host, port, check_host, created_at) "
                    "VALUES ('ct1', 'CT1', '10.0.0.5', 104, 0, '2026-11-01 00:00:00')"
                )
            )
            command.upgrade(config, "head")
        peers = PeerRegistry(engine)
        assert [(p.aet, p.tls) for p in peers.list()] == [("CT1", False)]
        peers.add(name="research", aet="RESEARCH", host="10.9.0.5", port=2762, tls=True)
        research = peers.by_aet("RESEARCH", fresh=True)
        assert research is not None
        assert research.tls
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0006")
            columns = connection.execute(text("PRAGMA table_info(remote_nodes)")).all()
        assert "tls" not in {column[1] for column in columns}
    finally:
        engine.dispose()
