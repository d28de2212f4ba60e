"""The index writer: rows nobody waits for (audit of queries) share commits; rows someone
waits for (stores) are never held back by them."""

import time

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
