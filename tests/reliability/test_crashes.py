"""Crash consistency: `pacs serve` killed with SIGKILL at random moments while modalities
send over several associations and STOW-RS, then started again, round after round.

After each kill, with the archive down, the archive is read as it is on disk:
- every instance that got a success status is indexed, and its blob holds the bytes sent;
- every indexed instance's blob is there and hashes to the recorded SHA-256: nothing
  half-written is visible;
and once started again, a query counts exactly the indexed instances. At the end, the
modalities send again what they sent in the first round (acknowledged or not): each is
taken once, and `pacs verify --repair` finds the blobs left by crashes between blob and
index and removes them.

Kills come at a random moment within the first seconds of traffic (the seed is in the
figures, PACS_RELIABILITY_SEED repeats a run). Embedded (SQLite + folder) and at scale
(PostgreSQL + S3).
"""

import hashlib
import os
import random
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage import Archive, StorageSettings
from storage.blobs import FilesystemBlobStore
from tests import factories
from tests.conftest import BACKENDS, SCU_AET, free_port
from tests.reliability.faults import FaultProxy
from tests.reliability.figures import FULL, ONE_AT_A_TIME, Figures, sized
from tests.reliability.traffic import Modalities, after_meta
from tests.servers import Server, send

pytestmark = [ONE_AT_A_TIME, pytest.mark.timeout(sized(180, 1800))]

KILLS = sized(3, 20)
PER_SENDER = sized(100, 200)
"""Instances each sender has for a round: more than it can send before the kill."""


@dataclass
class Backend:
    server: Server
    check: StorageSettings
    """How the test reads the archive itself while the server is down."""
    folder_blobs: bool


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    settings: dict[str, str] = {"PACS_LOG_LEVEL": "WARNING"}
    check = StorageSettings(data_dir=tmp_path / "archive", min_free_mb=0, _env_file=None)
    if request.param == "scale":
        database_url = request.getfixturevalue("postgres_url")
        blob_url = request.getfixturevalue("s3_url")
        settings |= {"PACS_DATABASE_URL": database_url, "PACS_BLOB_URL": blob_url}
        check = StorageSettings(
            data_dir=tmp_path / "check",
            database_url=database_url,
            blob_url=blob_url,
            min_free_mb=0,
            _env_file=None,
        )
    server = Server(tmp_path / "archive", free_port(), free_port(), settings=settings)
    added = server.pacs(
        "remote", "add", "ct", "--aet", SCU_AET, "--host", "127.0.0.1", "--port", "104"
    )
    assert added.returncode == 0, added.stderr
    return Backend(server, check, folder_blobs=request.param != "scale")


def test_sigkill_at_random_moments_loses_nothing_acknowledged(
    backend: Backend, tmp_path: Path, figures: Figures
) -> None:
    seed = int(os.environ.get("PACS_RELIABILITY_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    server = backend.server
    acknowledged: dict[str, Path] = {}
    sent = 0
    first_round: list[Path] = []
    checked: set[str] = set()
    try:
        for kill in range(KILLS):
            server.start()
            modalities = Modalities(
                server.dicom_port, server.http_port, tmp_path / f"r{kill}", per_sender=PER_SENDER
            )
            modalities.start()
            sent += len(modalities.sent)
            first_round = first_round or list(modalities.sent.values())
            modalities.wait_for_traffic()
            time.sleep(rng.uniform(0.0, 2.0))  # somewhere in the middle of the traffic
            server.stop(signal.SIGKILL)
            modalities.join()
            assert not modalities.refused, f"refused with the archive up: {modalities.refused}"
            acknowledged |= modalities.acknowledged
            _check_on_disk(backend.check, acknowledged, checked)

        server.start()
        indexed = _check_on_disk(backend.check, acknowledged, on_line=server)  # all again
        resent = {path.stem for path in first_round}
        # The first round, sent again: each taken once. How fast is test_load's business; on
        # a two-core machine busy with the rest of the suite, allow twice a modality's wait.
        statuses = send(server.dicom_port, first_round, timeout=60)
        assert statuses == [0] * len(first_round)
        server.stop()
        with Archive.open(backend.check) as archive:
            uids = [i.sop_instance_uid for i in archive.iter_instances()]
        assert len(uids) == len(set(uids)), "an instance sent twice is kept twice"
        assert set(uids) == indexed | resent
        orphans, removed = _repair(backend)
    finally:
        if server.process is not None and server.process.poll() is None:
            server.stop()

    figures.record("seed (PACS_RELIABILITY_SEED)", str(seed))
    figures.record("SIGKILLs survived", KILLS)
    figures.record("instances sent", sent)
    figures.record("instances acknowledged", len(acknowledged))
    figures.record("acknowledged instances found byte-identical", len(acknowledged))
    figures.record("orphan blobs found by pacs verify", orphans)
    figures.record("orphan blobs removed by pacs verify --repair", removed)


def _check_on_disk(
    settings: StorageSettings,
    acknowledged: dict[str, Path],
    checked: set[str] | None = None,
    on_line: Server | None = None,
) -> set[str]:
    """Check the archive as the kill left it; the SOP Instance UIDs indexed. Blobs already
    `checked` (by the check after an earlier kill) are not read again."""
    checked = set() if checked is None else checked
    with Archive.open(settings) as archive:
        stored = {i.sop_instance_uid: i for i in archive.iter_instances()}
        lost = set(acknowledged) - set(stored)
        assert not lost, f"{len(lost)} acknowledged instances lost, e.g. {sorted(lost)[:3]}"
        for uid, instance in stored.items():
            if uid in checked:
                continue
            with archive.blobs.open(instance.blob_key) as blob:  # NotFound: a missing blob
                data = blob.read()
            assert hashlib.sha256(data).hexdigest() == instance.sha256, f"{uid} half-written"
            if uid in acknowledged:
                assert after_meta(data) == after_meta(acknowledged[uid].read_bytes()), uid
            checked.add(uid)
    if on_line is not None:  # what a query sees is what is indexed, nothing half-written
        from tests.auth import http

        response = http.get(
            f"http://127.0.0.1:{on_line.http_port}/dicom-web/studies",
            params={"includefield": "NumberOfStudyRelatedInstances", "limit": "1000"},
        )
        assert response.status_code == 200, response.text
        counted = sum(study["00201208"]["Value"][0] for study in response.json())
        assert counted == len(stored)
    return set(stored)


def _repair(backend: Backend) -> tuple[int, int]:
    """`pacs verify --repair` once the orphans are old enough; (found, removed)."""
    server = backend.server
    listed = server.pacs("verify", "--orphans")
    found = _row(listed.stdout, "orphan blobs (not indexed)")
    assert _row(listed.stdout, "missing") == _row(listed.stdout, "corrupt") == 0, listed.stdout
    if found == 0:
        return 0, 0
    if backend.folder_blobs:  # a crash's leftovers, an hour later
        hour_ago = time.time() - 3600
        for path in (server.data_dir / "blobs").rglob("*"):
            os.utime(path, (hour_ago, hour_ago))
    elif FULL:
        time.sleep(61)  # S3 keeps its own times: wait out the shortest grace
    else:
        return found, 0
    repaired = server.pacs("verify", "--repair", "--grace-minutes", "1")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    removed = _row(repaired.stdout, "orphan blobs removed")
    assert removed == found
    again = server.pacs("verify", "--orphans")
    assert again.returncode == 0
    assert _row(again.stdout, "orphan blobs (not indexed)") == 0
    return found, removed


def _row(table: str, name: str) -> int:
    match = re.search(rf"{re.escape(name)}\s*│?\s*(\d+)", table)
    assert match, f"no {name!r} in:\n{table}"
    return int(match.group(1))


FAILURES = sized(3, 20)


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.parametrize("spool_mb", [0, 256], ids=["no-spool", "spool"])
def test_s3_failing_at_random_moments_loses_nothing_acknowledged(
    postgres_url: str,
    s3_endpoint: str,
    s3_url: str,
    spool_mb: int,
    tmp_path: Path,
    figures: Figures,
) -> None:
    """S3 goes away (connections reset, new ones refused) at random moments of the traffic,
    for up to two seconds at a time. Without a spool the instances that arrive meanwhile
    are refused (0xA700, 503); with `PACS_S3_SPOOL_MB` they are acknowledged from the
    node's disk and uploaded once S3 is back. Either way every acknowledged instance ends
    up in S3, byte-identical, and the node never needed a restart."""
    seed = int(os.environ.get("PACS_RELIABILITY_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    acknowledged: dict[str, Path] = {}
    refused: dict[int, int] = {}
    sent = 0
    with FaultProxy(int(s3_endpoint.rsplit(":", 1)[1])) as proxy:
        settings = {
            "PACS_LOG_LEVEL": "WARNING",
            "PACS_DATABASE_URL": postgres_url,
            "PACS_BLOB_URL": s3_url,
            "PACS_S3_SPOOL_MB": str(spool_mb),
            "PACS_S3_MAX_ATTEMPTS": "2",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}",
        }
        server = Server(tmp_path / "archive", free_port(), free_port(), settings=settings)
        added = server.pacs(
            "remote", "add", "ct", "--aet", SCU_AET, "--host", "127.0.0.1", "--port", "104"
        )
        assert added.returncode == 0, added.stderr
        server.start()
        try:
            for failure in range(FAILURES):
                modalities = Modalities(
                    server.dicom_port, server.http_port, tmp_path / f"f{failure}", per_sender=60
                )
                modalities.start()
                sent += len(modalities.sent)
                modalities.wait_for_traffic()
                time.sleep(rng.uniform(0.0, 1.0))
                proxy.down()
                time.sleep(rng.uniform(0.2, 2.0))
                proxy.restore()
                modalities.join(timeout=120)
                acknowledged |= modalities.acknowledged
                assert modalities.unavailable_without_retry_after == 0
                for status, count in modalities.refused.items():
                    refused[status] = refused.get(status, 0) + count
            assert set(refused) <= {0xA700, 503}, refused
            assert send(server.dicom_port, _fresh(tmp_path / "after")) == [0]  # no restart
            spool = FilesystemBlobStore(server.data_dir / "spool")
            deadline = time.monotonic() + 120
            while spool_mb and list(spool.keys()):
                assert time.monotonic() < deadline, "the spool did not drain once S3 was back"
                time.sleep(0.5)
        finally:
            server.stop()
    check = StorageSettings(
        data_dir=tmp_path / "check",
        database_url=postgres_url,
        blob_url=s3_url,  # S3 itself: the spool is empty
        min_free_mb=0,
        _env_file=None,
    )
    _check_on_disk(check, acknowledged)
    figures.record("seed (PACS_RELIABILITY_SEED)", str(seed))
    figures.record("S3 failures survived (up to 2 s each)", FAILURES)
    figures.record("instances sent", sent)
    figures.record("instances acknowledged", len(acknowledged))
    figures.record("acknowledged instances found byte-identical in S3", len(acknowledged))
    figures.record("C-STORE refused with 0xA700 (out of resources)", refused.get(0xA700, 0))
    figures.record("STOW-RS requests refused with 503", refused.get(503, 0))


def _fresh(folder: Path) -> list[Path]:
    return factories.write_all([factories.image()], folder)
