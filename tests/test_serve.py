"""``pacs serve`` as a process: restarts, SIGKILL, memory bounds, HTTP."""

import hashlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tests import factories
from tests.auth import ADMIN_HEADERS, http
from tests.conftest import SCU_AET, associate, free_port
from tests.servers import Server, archive_of, send


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "archive", free_port(), free_port())
    registered = server.pacs(
        "remote", "add", "scu", "--aet", SCU_AET, "--host", "127.0.0.1", "--port", str(free_port())
    )
    assert registered.returncode == 0, registered.stderr
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.stop()


def test_a_restarted_server_still_has_everything(server: Server, tmp_path: Path) -> None:
    paths = factories.write_all(factories.ct_series(5), tmp_path / "sent")
    assert send(server.dicom_port, paths) == [0] * 5
    assert server.stop() == 0
    server.start()
    from tests.dicom_node.test_find import find, query

    matches, final = find(
        server.dicom_port, query("STUDY", PatientName="NGUYEN*", NumberOfStudyRelatedInstances="")
    )
    assert final.Status == 0
    assert [m.NumberOfStudyRelatedInstances for m in matches] == [5]


def test_sigkill_during_ingest_loses_no_acknowledged_instance(
    server: Server, tmp_path: Path
) -> None:
    paths = factories.write_all(factories.ct_series(300, rows=64, columns=64), tmp_path / "sent")
    acknowledged: dict[str, bytes] = {}
    done = threading.Event()

    def modality() -> None:
        assoc = associate(server.dicom_port, CTImageStorage, timeout=5)
        try:
            for path in paths:
                status = assoc.send_c_store(path)
                if status and status.get("Status") == 0:
                    acknowledged[path.stem] = factories.after_meta(path)
                elif not assoc.is_established:
                    break
        except (RuntimeError, OSError):
            pass
        finally:
            done.set()

    sender = threading.Thread(target=modality)
    sender.start()
    while len(acknowledged) < 60 and not done.is_set():
        time.sleep(0.01)
    server.stop(signal.SIGKILL)
    sender.join(timeout=60)
    assert 60 <= len(acknowledged) < 300

    with archive_of(server) as archive:
        stored = {i.sop_instance_uid: i for i in archive.iter_instances()}
        assert set(acknowledged) <= set(stored)
        for instance in stored.values():  # no row points at a missing or partial blob
            assert archive.blob_matches(instance.blob_key, instance.sha256)
        for uid, data in acknowledged.items():
            blob = archive.blobs.local_path(stored[uid].blob_key)
            assert blob is not None
            assert factories.after_meta(blob) == data
    server.start()  # and it starts again after the crash
    assert send(server.dicom_port, paths[-1:]) == [0]


def _multiframe(path: Path, frames: int) -> str:
    """Write a large multi-frame CT to `path` without holding its pixels in memory."""
    ds = factories.image(rows=512, columns=512)
    del ds.PixelData
    ds.NumberOfFrames = frames
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    with path.open("wb") as fp:
        dcmwrite(fp, ds, enforce_file_format=True)
        size = 512 * 512 * 2 * frames
        fp.write(struct.pack("<HH", 0x7FE0, 0x0010) + b"OW\0\0" + struct.pack("<I", size))
        chunk = os.urandom(1 << 20)
        for _ in range(size // len(chunk)):
            fp.write(chunk)
    return str(ds.SOPInstanceUID)


def test_a_512_mib_multiframe_instance_is_taken_in_bounded_memory(
    server: Server, tmp_path: Path
) -> None:
    path = tmp_path / "multiframe.dcm"
    uid = _multiframe(path, frames=1024)  # 512 MiB of pixel data
    before = server.peak_rss_kib()
    assert send(server.dicom_port, [path]) == [0]
    grown_mib = (server.peak_rss_kib() - before) / 1024
    assert grown_mib < 64, f"peak RSS grew by {grown_mib:.0f} MiB"
    server.stop()
    with archive_of(server) as archive:
        (stored,) = [i for i in archive.iter_instances() if i.sop_instance_uid == uid]
        digest = hashlib.sha256()
        with archive.blobs.open(stored.blob_key) as blob:
            while chunk := blob.read(1 << 22):
                digest.update(chunk)
        assert digest.hexdigest() == stored.sha256
        assert stored.size > 512 * 2**20


def test_a_pdu_flood_does_not_grow_memory(server: Server) -> None:
    before = server.peak_rss_kib()
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", server.dicom_port))
        sock.sendall(struct.pack(">BBL", 0x04, 0, 0xFFFFFFFF) + b"\0" * 1024)
        try:
            for _ in range(256):  # up to 16 MiB each, if the server kept reading
                sock.sendall(b"\0" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.close()
    assert (server.peak_rss_kib() - before) / 1024 < 16
    assert send(
        server.dicom_port, factories.write_all([factories.image()], server.data_dir.parent / "x")
    ) == [0]


def test_parallel_associations_are_served_by_several_processes(
    server: Server, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    listeners = [
        pid
        for pid in server.children()
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(listeners) == len(os.sched_getaffinity(0)) - 1  # with serve's own: one per core
    series = [factories.write_all(factories.ct_series(10), tmp_path / f"s{i}") for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda paths: send(server.dicom_port, paths), series))
    assert statuses == [[0] * 10] * 6
    server.stop()
    with archive_of(server) as archive:
        assert archive.stats().instances == 60


def test_health_and_metrics(server: Server, tmp_path: Path) -> None:
    send(server.dicom_port, factories.write_all([factories.image()], tmp_path / "sent"))
    health = http.get(f"http://127.0.0.1:{server.http_port}/health")
    assert health.json() == {"status": "ok", "database": "up"}
    metrics = http.get(f"http://127.0.0.1:{server.http_port}/metrics").text
    assert 'pacs_dicom_stores_total{status="0x0000"} 1.0' in metrics


def test_the_log_says_what_happened(server: Server, tmp_path: Path) -> None:
    send(server.dicom_port, factories.write_all(factories.ct_series(2), tmp_path / "sent"))
    server.stop()
    assert server.log is not None
    log = server.log.read_text()
    assert f"Accepted association from {SCU_AET} (127.0.0.1)" in log
    assert f"Association from {SCU_AET} (127.0.0.1) released: 2 stored" in log


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        (
            {"PACS_ACCEPT_ANY_CALLER": "true", "PACS_HOST": "0.0.0.0"},  # noqa: S104
            "only allowed on a loopback address",
        ),
        ({"PACS_HTTP_HOST": "0.0.0.0"}, "over HTTPS only"),  # noqa: S104
    ],
    ids=["any-caller", "plain-http-off-loopback"],
)
def test_serve_refuses_to_expose_patient_data(
    tmp_path: Path, settings: dict[str, str], reason: str
) -> None:
    env = {
        **os.environ,
        "PACS_DATA_DIR": str(tmp_path),
        "PACS_DICOM_PORT": str(free_port()),
        "PACS_HTTP_PORT": str(free_port()),
        **settings,
    }
    result = subprocess.run(
        [sys.executable, "-m", "pacs", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert reason in result.stderr


def test_stored_uids_never_become_paths(server: Server, tmp_path: Path) -> None:
    ds: Dataset = factories.image(sop_uid=generate_uid())
    send(server.dicom_port, factories.write_all([ds], tmp_path / "sent"))
    names = [p.name for p in server.data_dir.rglob("*")]
    assert not any(ds.SOPInstanceUID in name or ds.StudyInstanceUID in name for name in names)


def test_what_a_modality_sends_is_seen_over_dicomweb(server: Server, tmp_path: Path) -> None:
    """C-STORE in, QIDO-RS and WADO-RS out, through `pacs serve` as deployed."""
    from dicomweb_client import DICOMwebClient

    series = factories.ct_series(3)
    assert send(server.dicom_port, factories.write_all(series, tmp_path / "sent")) == [0] * 3
    client = DICOMwebClient(f"http://127.0.0.1:{server.http_port}/dicom-web", headers=ADMIN_HEADERS)
    (study,) = client.search_for_studies(search_filters={"PatientName": "nguyen*"})
    assert Dataset.from_json(study).NumberOfStudyRelatedInstances == 3
    retrieved = client.retrieve_series(series[0].StudyInstanceUID, series[0].SeriesInstanceUID)
    assert sorted(ds.InstanceNumber for ds in retrieved) == [1, 2, 3]
    assert str(retrieved[0].PatientName) == factories.VIETNAMESE_NAME


def test_pacs_serve_sends_its_audit_trail_to_the_syslog_collector(tmp_path: Path) -> None:
    """With PACS_AUDIT_SYSLOG_URL, an association and a store reach a real TCP collector as
    IHE ATNA messages in RFC 5424 syslog."""

    from tests.storage.test_atna import _TcpServer

    collector = _TcpServer(free_port())
    threading.Thread(target=collector.serve_forever, args=(0.05,), daemon=True).start()
    url = f"tcp://127.0.0.1:{collector.server_address[1]}"
    server = Server(
        tmp_path / "archive", free_port(), free_port(), settings={"PACS_AUDIT_SYSLOG_URL": url}
    )
    server.pacs("remote", "add", "ct", "--aet", SCU_AET, "--host", "127.0.0.1", "--port", "104")
    server.start()
    try:
        ds = factories.image(name="Nguyễn^Văn An")
        assoc = associate(server.dicom_port, ds.SOPClassUID)
        try:
            assert int(assoc.send_c_store(factories.write(ds, tmp_path / "sent")).Status) == 0
        finally:
            assoc.release()
        deadline = time.monotonic() + 20
        while not any(b"110104" in m for m in collector.received.messages):
            assert time.monotonic() < deadline, collector.received.messages
            time.sleep(0.1)
    finally:
        server.stop()
        collector.shutdown()
        collector.server_close()
    stored = next(m for m in collector.received.messages if b"110104" in m)
    assert stored.startswith(b"<85>1 ")  # authpriv.notice, RFC 5424
    assert b"IHE+RFC-3881" in stored
    assert str(ds.StudyInstanceUID).encode() in stored
