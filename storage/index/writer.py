"""Group commit: one thread writes the index, many associations wait on it.

Each stored instance becomes a job. The writer thread takes every job waiting, records each
in its own savepoint, commits once, and only then wakes the waiting callers: N instances
arriving together cost one durable commit instead of N, and SQLite never sees two writers
from this process. A job fails alone (its savepoint rolls back); a failed commit fails the
whole batch with :class:`~storage.errors.StorageUnavailable`.
"""

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Generic, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from storage.errors import StorageUnavailable

log = logging.getLogger(__name__)

_ATTEMPTS = 4
"""Tries of a job that conflicts with another node's insert (each retry reads its rows)."""

MAX_BATCH = 64
LINGER = 0.05
"""Seconds a batch of detached jobs (audit rows nobody waits for) waits for more."""
WAIT_TIMEOUT = 120.0

T = TypeVar("T")


class _Job(Generic[T]):
    __slots__ = ("detached", "done", "error", "result", "work")

    def __init__(self, work: Callable[[Connection, datetime], T], detached: bool = False) -> None:
        self.work = work
        self.detached = detached  # nobody waits: failures are logged here
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


class IndexWriter:
    """Runs write jobs on one thread, committing them in batches."""

    def __init__(self, engine: Engine, *, name: str = "index-writer") -> None:
        self._engine = engine
        self._jobs: queue.SimpleQueue[_Job[object] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False
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
        if not job.done.wait(WAIT_TIMEOUT):
            raise StorageUnavailable(f"the index did not commit within {WAIT_TIMEOUT:.0f} s")
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def submit(self, work: Callable[[Connection, datetime], object]) -> None:
        """Queue `work` for the next batch without waiting for it (errors are logged)."""
        if self._closed:
            raise StorageUnavailable("the index writer is shut down")
        self._jobs.put(_Job(work, detached=True))

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
            # Nobody waits on a detached job (an audit row of a query): it lingers a little
            # for company, so a busy API costs a commit per LINGER, not one per request.
            # A job someone waits on ends the lingering at once.
            linger_until = time.monotonic() + LINGER if first.detached else 0.0
            while len(batch) < MAX_BATCH:
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
                if not job.detached:
                    linger_until = 0.0
            self._commit(batch)

    def _commit(self, batch: list[_Job[object]]) -> None:
        now = datetime.now(UTC)
        if len(batch) > 1 and self._commit_together(batch, now):
            return
        for job in batch:  # alone: a failing job takes none of the others down with it
            self._commit_alone(job, now)

    def _commit_together(self, batch: list[_Job[object]], now: datetime) -> bool:
        """Run every job in one transaction; False (and nothing committed) if any fails."""
        try:
            with (
                self._engine.connect().execution_options(**self._options) as conn,
                conn.begin(),
            ):
                results = [job.work(conn, now) for job in batch]
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


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
