"""The index writer: rows nobody waits for (audit of queries) share commits; rows someone
waits for (stores) are never held back by them."""

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, event, func, select, text

from storage import Archive, Source, StorageSettings, StorageUnavailable, stage_file
from storage.archive import write_audit
from storage.errors import CommitUncertain
from storage.index.tables import AuditEvent
from storage.index.writer import LINGER
from tests import factories
from tests.reliability.faults import FaultProxy


def _commits(archive: Archive) -> list[float]:
    seen: list[float] = []
    event.listen(archive.engine, "commit", lambda _conn: seen.append(time.monotonic()))
    return seen


def test_audit_rows_of_a_burst_of_queries_share_one_commit(archive: Archive) -> None:
    commits = _commits(archive)
    for number in range(20):
        archive.audit(action="query", outcome="success", actor="http", detail=f"q{number}")
        time.sleep(0.001)
    time.sleep(LINGER * 4)
    with archive.read() as conn:
        assert conn.scalar(select(func.count()).select_from(AuditEvent)) == 20
    assert 1 <= len(commits) <= 3


def test_a_waiting_job_ends_the_lingering(archive: Archive) -> None:
    archive.audit(action="query", outcome="success", actor="http")
    started = time.monotonic()

    def nothing(_conn: Connection, _now: object) -> int:
        return 7

    assert archive.run_write(nothing) == 7
    assert time.monotonic() - started < LINGER  # committed at once, audit row with it


def _audit_inserts(archive: Archive) -> list[int]:
    """How many rows each INSERT into audit_events carried, as they are executed."""
    seen: list[int] = []

    def count(
        _conn: object, _cursor: object, statement: str, parameters: object, *_: object
    ) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO AUDIT_EVENTS"):
            seen.append(len(parameters) if isinstance(parameters, list) else 1)

    event.listen(archive.engine, "before_cursor_execute", count)
    return seen


def test_audit_rows_queued_together_are_inserted_together(archive: Archive) -> None:
    """One statement per batch, not one round trip each: in `pacs serve`, whose API threads
    keep the interpreter lock busy, a round trip per row let the rows of a busy API (one
    per request) pile up in the writer's queue, and the stores behind them wait a minute."""
    inserts = _audit_inserts(archive)
    for number in range(200):
        archive.audit(action="query", outcome="success", actor="http", detail=f"q{number}")
    archive.run_write(lambda _conn, _now: None)  # queued after them: they are committed
    assert sum(inserts) == 200
    assert len(inserts) < 20  # one per batch (200 before)


def test_queued_and_awaited_audit_rows_keep_their_order(archive: Archive) -> None:
    archive.audit(action="query", outcome="success", actor="http", detail="first")
    archive.audit(action="query", outcome="success", actor="http", detail="second")
    archive.run_write(
        lambda conn, now: write_audit(conn, now, action="store", actor="ct", detail="awaited")
    )
    archive.audit(action="query", outcome="success", actor="http", detail="last")
    archive.run_write(lambda _conn, _now: None)
    with archive.read() as conn:
        details = conn.scalars(select(AuditEvent.detail).order_by(AuditEvent.id)).all()
    assert details == ["first", "second", "awaited", "last"]


def test_a_failing_job_leaves_the_rows_of_its_batch_together(archive: Archive) -> None:
    inserts = _audit_inserts(archive)
    for number in range(50):
        archive.audit(action="query", outcome="success", actor="http", detail=f"q{number}")

    def fails(_conn: Connection, _now: object) -> None:
        raise ValueError("this job's own error")

    with pytest.raises(ValueError, match="own error"):
        archive.run_write(fails)
    archive.run_write(lambda _conn, _now: None)
    with archive.read() as conn:
        assert conn.scalar(select(func.count()).select_from(AuditEvent)) == 50
    assert len(inserts) < 10  # the batch failed together, then its rows went together


def test_a_job_with_bad_sql_fails_alone_not_its_batch(archive: Archive) -> None:
    """SQLite reports a statement's own error (no such table) as an OperationalError, like
    a locked or full database; only the database's failures fail the whole batch."""
    queued = threading.Event()

    def holds(_conn: Connection, _now: object) -> None:
        queued.wait(10)  # the writer is busy here while the next two queue up behind it

    def bad_sql(conn: Connection, _now: object) -> None:
        conn.execute(text("SELECT * FROM no_such_table"))

    def good(conn: Connection, now: object) -> int:
        write_audit(conn, now, action="store", actor="ct", detail="beside the bad one")
        return 1

    errors: list[BaseException] = []

    def run_bad() -> None:
        try:
            archive.run_write(bad_sql)
        except Exception as exc:
            errors.append(exc)

    results: list[int] = []
    threads = [
        threading.Thread(target=archive.run_write, args=(holds,)),
        threading.Thread(target=run_bad),
        threading.Thread(target=lambda: results.append(archive.run_write(good))),
    ]
    threads[0].start()
    time.sleep(0.2)
    threads[1].start()
    threads[2].start()
    time.sleep(0.2)
    queued.set()
    for thread in threads:
        thread.join(10)
    assert results == [1]
    assert len(errors) == 1
    assert "no_such_table" in str(errors[0])


def _hold_writer(archive: Archive) -> threading.Event:
    """Keep the writer busy with a job until the returned event is set."""
    release = threading.Event()

    def hold() -> None:
        with contextlib.suppress(CommitUncertain):  # its caller's wait runs out first
            archive.run_write(lambda _conn, _now: release.wait(30))

    threading.Thread(target=hold, daemon=True).start()
    time.sleep(0.2)
    return release


@pytest.fixture
def impatient(storage_settings: StorageSettings) -> Iterator[Archive]:
    """An archive whose stores wait half a second for the index (PACS_INDEX_TIMEOUT)."""
    with Archive.open(storage_settings.model_copy(update={"index_timeout": 0.5})) as archive:
        yield archive


def test_a_job_not_begun_in_time_is_refused_and_never_runs(impatient: Archive) -> None:
    archive = impatient
    release = _hold_writer(archive)
    ran: list[str] = []
    with pytest.raises(StorageUnavailable, match="nothing was written") as refused:
        archive.run_write(lambda _conn, _now: ran.append("late"))
    assert not isinstance(refused.value, CommitUncertain)
    release.set()
    archive.run_write(lambda _conn, _now: None)  # the writer has moved past it
    assert ran == []


def test_a_job_begun_but_not_committed_in_time_may_still_commit(impatient: Archive) -> None:
    archive = impatient
    release = threading.Event()

    def slow(conn: Connection, now: object) -> None:
        write_audit(conn, now, action="store", actor="ct", detail="slow commit")
        release.wait(30)

    with pytest.raises(CommitUncertain):
        archive.run_write(slow)
    release.set()
    archive.run_write(lambda _conn, _now: None)
    with archive.read() as conn:
        assert conn.scalar(select(AuditEvent.detail)) == "slow commit"


@pytest.mark.postgres
def test_a_store_unanswered_by_postgresql_keeps_its_blob_for_the_late_commit(
    postgres_url: str, tmp_path: Path
) -> None:
    """PostgreSQL stops answering mid-store (a partition): the modality hears 0xA700 in
    time, and once the database answers again the commit it had begun goes through, so the
    blob it names must still be there."""
    ct = factories.ct_series(1)[0]
    with FaultProxy(5432) as proxy:
        proxied = postgres_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
        settings = StorageSettings(
            data_dir=tmp_path / "archive",
            database_url=proxied,
            index_timeout=1,
            min_free_mb=0,
            _env_file=None,
        )
        with Archive.open(settings) as archive:
            staged = stage_file(factories.write(ct, tmp_path), archive.staging_dir)
            proxy.blackhole()
            with pytest.raises(CommitUncertain):
                archive.store(staged, source=Source("dimse", aet="CT"))
            proxy.restore()
            archive.run_write(lambda _conn, _now: None)  # the late commit is through
            (stored,) = archive.iter_instances()
            assert stored.sop_instance_uid == ct.SOPInstanceUID
            with archive.blobs.open(stored.blob_key) as blob:
                assert hashlib.sha256(blob.read()).hexdigest() == stored.sha256
