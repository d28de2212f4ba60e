"""The index writer: rows nobody waits for (audit of queries) share commits; rows someone
waits for (stores) are never held back by them."""

import time

import pytest
from sqlalchemy import Connection, event, func, select

from storage import Archive
from storage.index.tables import AuditEvent
from storage.index.writer import LINGER


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
    from storage.archive import write_audit

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
