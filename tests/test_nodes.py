"""Two `pacs serve` nodes on one PostgreSQL and one bucket, one of them killed mid-store."""

import signal
import threading
import time
from pathlib import Path

import pytest
from pynetdicom.sop_class import CTImageStorage

from storage import Archive, StorageSettings
from storage.verify import Problem, verify
from tests import factories
from tests.conftest import SCU_AET, associate, free_port
from tests.servers import Server, send

pytestmark = [pytest.mark.postgres, pytest.mark.s3]


def test_two_nodes_share_one_archive_and_a_killed_node_leaves_nothing_half_written(
    postgres_url: str, s3_url: str, tmp_path: Path
) -> None:
    shared = {"PACS_DATABASE_URL": postgres_url, "PACS_BLOB_URL": s3_url}
    nodes = [Server(tmp_path / name, free_port(), free_port(), settings=shared) for name in "ab"]
    registered = nodes[0].pacs(
        "remote", "add", "ct", "--aet", SCU_AET, "--host", "127.0.0.1", "--port", "104"
    )
    assert registered.returncode == 0, registered.stderr
    for node in nodes:
        node.start()
    paths = factories.write_all(factories.ct_series(120, rows=64, columns=64), tmp_path / "ct")
    acknowledged: dict[int, set[str]] = {0: set(), 1: set()}

    def modality(index: int) -> None:  # the same study, sent to both nodes at once
        try:
            assoc = associate(nodes[index].dicom_port, CTImageStorage, timeout=10)
            for path in paths:
                status = assoc.send_c_store(path)
                if status and status.get("Status") == 0:
                    acknowledged[index].add(path.stem)
                elif not assoc.is_established:
                    return
            assoc.release()
        except (RuntimeError, OSError):
            pass

    senders = [threading.Thread(target=modality, args=(i,)) for i in (0, 1)]
    for sender in senders:
        sender.start()
    deadline = time.monotonic() + 60
    while len(acknowledged[0]) < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    nodes[0].stop(signal.SIGKILL)
    for sender in senders:
        sender.join(timeout=120)

    assert 30 <= len(acknowledged[0]) < 120
    assert len(acknowledged[1]) == 120  # the other node went on
    settings = StorageSettings(
        data_dir=tmp_path / "check", _env_file=None, **shared_settings(shared)
    )
    with Archive.open(settings) as archive:
        stored = [i.sop_instance_uid for i in archive.iter_instances()]
        assert sorted(stored) == sorted(acknowledged[1])  # each instance once
        report = verify(archive)
        assert report.count(Problem.MISSING) == report.count(Problem.CORRUPT) == 0
        # A blob uploaded by the killed node before its index commit is an orphan, never
        # visible: verify lists it.
        assert report.blobs == 120 + report.count(Problem.ORPHAN)
    nodes[0].start()  # the killed node starts again and sees everything
    from tests.dicom_node.test_find import find, query

    matches, final = find(
        nodes[0].dicom_port, query("STUDY", PatientName="NGUYEN*", NumberOfStudyRelatedInstances="")
    )
    assert final.Status == 0
    assert [m.NumberOfStudyRelatedInstances for m in matches] == [120]
    assert send(nodes[0].dicom_port, paths[:1]) == [0]
    for node in nodes:
        node.stop()


def shared_settings(env: dict[str, str]) -> dict[str, str]:
    return {"database_url": env["PACS_DATABASE_URL"], "blob_url": env["PACS_BLOB_URL"]}


def test_a_spooled_node_killed_while_s3_is_down_loses_nothing_acknowledged(
    postgres_url: str, s3_url: str, tmp_path: Path
) -> None:
    """With PACS_S3_SPOOL_MB a node acknowledges what is fsynced on its disk; killed before
    S3 came back, it uploads all of it when it starts again."""
    import boto3

    down = s3_url.replace("s3://", "s3://later-")  # no such bucket yet: every upload fails
    settings = {
        "PACS_DATABASE_URL": postgres_url,
        "PACS_BLOB_URL": down,
        "PACS_S3_SPOOL_MB": "256",
        "PACS_S3_MAX_ATTEMPTS": "1",
    }
    node = Server(tmp_path / "a", free_port(), free_port(), settings=settings)
    registered = node.pacs(
        "remote", "add", "ct", "--aet", SCU_AET, "--host", "127.0.0.1", "--port", "104"
    )
    assert registered.returncode == 0, registered.stderr
    node.start()
    paths = factories.write_all(factories.ct_series(40, rows=64, columns=64), tmp_path / "ct")
    assert send(node.dicom_port, paths) == [0] * 40  # acknowledged with S3 down
    node.stop(signal.SIGKILL)

    bucket = down.removeprefix("s3://").split("/")[0]
    boto3.client("s3").create_bucket(Bucket=bucket)
    node.start()
    check = StorageSettings(
        data_dir=tmp_path / "check",
        database_url=postgres_url,
        blob_url=down,  # S3 itself, not the node's spool
        _env_file=None,
    )
    with Archive.open(check) as archive:
        deadline = time.monotonic() + 60
        while len(list(archive.blobs.keys())) < 40 and time.monotonic() < deadline:
            time.sleep(0.2)
        report = verify(archive)
        assert report.blobs == 40
        assert report.count(Problem.MISSING) == report.count(Problem.CORRUPT) == 0
        assert report.count(Problem.ORPHAN) == 0
    node.stop()
