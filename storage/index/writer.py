"""Group commit: one thread writes the index, many associations wait on it.

Each stored instance becomes a job. The writer thread takes every job waiting, records each
in its own savepoint, commits once, and only then wakes the waiting callers: N instances
arriving together cost one durable commit instead of N, and SQLite never sees two writers
from this process. A job fails alone (its savepoint rolls back); a failed commit fails the
whole batch with :class:`~storage.errors.StorageUnavailable`.

Rows nobody waits for (the audit rows of a busy API: one per request) are queued as data
with :meth:`IndexWriter.append` and inserted together, one statement per batch: a round trip
to PostgreSQL each would let the writer fall behind the API, in a process whose other
threads keep the interpreter lock busy (each round trip waits for it again), and the stores
queued behind those rows would wait for minutes.
"""

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, Executable
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from storage.errors import CommitUncertain, StorageUnavailable

log = logging.getLogger(__name__)

_ATTEMPTS = 4
"""Tries of a job that conflicts with another node's insert (each retry reads its rows)."""

MAX_BATCH = 64
"""Most jobs (other than appended rows) committed together."""
MAX_ROWS = 1000
"""Most appended rows committed together."""
LINGER = 0.05
"""Seconds a batch of detached jobs (audit rows nobody waits for) waits for more."""

T = TypeVar("T")


Row = tuple[Executable, Callable[[datetime], dict[str, Any]]]
"""An INSERT statement and a row's values, given the commit's time."""


class _Job(Generic[T]):
    __slots__ = ("abandoned", "begun", "detached", "done", "error", "result", "row", "work")

    def __init__(
        self,
        work: Callable[[Connection, datetime], T],
        detached: bool = False,
        row: Row | None = None,
    ) -> None:
        self.work = work
        self.detached = detached  # nobody waits: failures are logged here
        self.row = row  # an appended row: inserted with the batch's others
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None
        self.begun = False  # taken into a transaction: it may commit
        self.abandoned = False  # its caller stopped waiting before that: never run


class IndexWriter:
    """Runs write jobs on one thread, committing them in batches."""

    def __init__(self, engine: Engine, *, wait: float = 20.0, name: str = "index-writer") -> None:
        """`wait`: seconds a caller waits for its job's commit (``PACS_INDEX_TIMEOUT``), so
        that a store is answered within a modality's usual 30 s even when the database
        stops answering (a partition; a hung server). A job not begun by then is dropped,
        nothing written; one begun may still commit (:class:`CommitUncertain`)."""
        self._engine = engine
        self._wait = wait
        self._jobs: queue.SimpleQueue[_Job[object] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False
        self._claims = threading.Lock()  # a job is either begun or abandoned, never both
        self._options: dict[str, object] = (
            {"sqlite_begin": "IMMEDIATE"} if engine.dialect.name == "sqlite" else {}
        )
        self._thread.start()

    def run(self, work: Callable[[Connection, datetime], T]) -> T:
        """Run `work(connection, now)` in the next batch; return once it is committed."""
        if self._closed:
            raise StorageUnavailable("the index writer is shut down")
        job: _Job[T] = _Job(work)
        self._jobs.put(job)  # type: ignore[arg-type]
        if not job.done.wait(self._wait):
            with self._claims:
                job.abandoned = not job.begun
            if job.abandoned:
                raise StorageUnavailable(
                    f"the index database took no write within {self._wait:g} s; nothing was written"
                )
            if not job.done.is_set():  # (it may have just finished)
                raise CommitUncertain(
                    f"the index database did not commit within {self._wait:g} s; "
                    "the write may still be committed"
                )
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def append(self, statement: Executable, values: Callable[[datetime], dict[str, Any]]) -> None:
        """Queue one row of `statement` (an INSERT), its values made at commit time, without
        waiting for it; the rows of a batch are inserted in one statement."""
        if self._closed:
            raise StorageUnavailable("the index writer is shut down")

        def alone(conn: Connection, now: datetime) -> None:
            conn.execute(statement, values(now))

        self._jobs.put(_Job(alone, detached=True, row=(statement, values)))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._jobs.put(None)
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch = [first]
            rows = int(first.row is not None)
            # Nobody waits on a detached job (an audit row of a query): it lingers a little
            # for company, so a busy API costs a commit per LINGER, not one per request.
            # A job someone waits on ends the lingering at once.
            linger_until = time.monotonic() + LINGER if first.detached else 0.0
            while len(batch) - rows < MAX_BATCH and rows < MAX_ROWS:
                remaining = linger_until - time.monotonic()
                try:
                    if remaining > 0:
                        job = self._jobs.get(timeout=remaining)
                    else:
                        job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._commit(batch)
                    return
                batch.append(job)
                rows += job.row is not None
                if not job.detached:
                    linger_until = 0.0
            self._commit(batch)

    def _commit(self, batch: list[_Job[object]]) -> None:
        with self._claims:
            batch = [job for job in batch if not job.abandoned]
            for job in batch:
                job.begun = True
        now = datetime.now(UTC)
        if len(batch) > 1 and self._commit_together(batch, now):
            return
        # Appended rows (plain inserts) fail only all together, with the database: they stay
        # one statement, not a round trip each.
        rows = [job for job in batch if job.row is not None]
        if len(rows) > 1 and self._commit_together(rows, now):
            batch = [job for job in batch if job.row is None]
        for job in batch:  # alone: a failing job takes none of the others down with it
            self._commit_alone(job, now)

    def _commit_together(self, batch: list[_Job[object]], now: datetime) -> bool:
        """Run every job in one transaction; False (and nothing committed) if a job failed,
        to be run again alone; True once every job has its result, or the database's error."""
        try:
            with (
                self._engine.connect().execution_options(**self._options) as conn,
                conn.begin(),
            ):
                results = _run_together(conn, batch, now)
        except OperationalError as exc:
            if not _database_failed(exc):  # one job's own statement: it fails alone
                return False
            # The database itself (locked by another process, full, gone), not one job: run
            # again, alone or in parts, each would wait as long again for the same failure,
            # and the last of a batch would be answered long after its modality gave up.
            log.error("Index commit of %d jobs failed: %s", len(batch), _short(exc))
            error = StorageUnavailable(f"the index database cannot commit: {_short(exc)}")
            for job in batch:
                job.error = error
                job.done.set()
            return True
        except Exception:  # each job is run again alone, where its error belongs to it
            return False
        for job, result in zip(batch, results, strict=True):
            job.result = result
            job.done.set()
        return True

    def _commit_alone(self, job: _Job[object], now: datetime) -> None:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with (
                    self._engine.connect().execution_options(**self._options) as conn,
                    conn.begin(),
                ):
                    job.result = job.work(conn, now)
                break
            except IntegrityError as exc:
                # Another node inserted the same patient, study, series or instance between
                # our read and our insert: the second attempt reads its row.
                if attempt == _ATTEMPTS:
                    job.error = StorageUnavailable(f"index conflict: {_short(exc)}")
            except (SQLAlchemyError, OSError) as exc:
                log.error("Index commit failed: %s", _short(exc))
                job.error = StorageUnavailable(f"the index database cannot commit: {_short(exc)}")
                break
            except Exception as exc:  # the job's own error (InconsistentInstance...)
                job.error = exc
                break
        if job.detached and job.error is not None:
            log.error("A queued index write failed: %s", job.error)
        job.done.set()


def _run_together(conn: Connection, batch: list[_Job[object]], now: datetime) -> list[object]:
    """Run the batch's jobs in order; consecutive appended rows of one statement go in one
    executemany."""
    results: list[object] = []
    rows: list[dict[str, Any]] = []
    statement: Executable | None = None

    def insert_rows() -> None:
        if statement is not None and rows:
            conn.execute(statement, list(rows))
        rows.clear()

    for job in batch:
        if job.row is None:
            insert_rows()
            results.append(job.work(conn, now))
        else:
            if job.row[0] is not statement:
                insert_rows()
                statement = job.row[0]
            rows.append(job.row[1](now))
            results.append(None)
    insert_rows()
    return results


_SQLITE_FAILURES = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 26})
"""SQLite's primary result codes that are the database's, not a statement's: BUSY, LOCKED,
NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB."""
_POSTGRES_FAILURES = ("08", "53", "57P", "58")
"""PostgreSQL SQLSTATE prefixes of the same: connection exception, insufficient resources
(disk full, out of memory), operator intervention (shutting down), system error."""


def _database_failed(exc: OperationalError) -> bool:
    """Whether `exc` is the database failing (locked by another process, full, unreachable),
    as opposed to one job's own statement (SQLite reports bad SQL as an OperationalError)."""
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _SQLITE_FAILURES
    state = getattr(orig, "sqlstate", None)
    return not isinstance(state, str) or state.startswith(_POSTGRES_FAILURES)


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
