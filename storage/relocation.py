"""Moving an archive to another index database and blob store (``pacs migrate``).

Blobs first, then index rows, so the target never holds a row whose blob is missing. Both
steps skip what the target already has, and rows that changed since (a study's counts)
are brought up to date: an interrupted move is resumed, or a later one catches up, by
running it again. Blobs keep their keys and rows their primary keys (sequences are moved
past them on PostgreSQL), so everything that refers to them (audit trail, outbox,
commitments) stays true. Every blob is hashed on its way and compared with the SHA-256
the index recorded at arrival; a blob that differs, or is missing, is not moved, nor is
its instance's row, and both are reported. At the end the row counts are compared table by table.

The source archive may go on serving while it moves; what arrives meanwhile is moved by
the next run, and the last run, with ``pacs serve`` stopped, leaves both the same.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sqlalchemy import Connection, Table, func, select, text

from storage.archive import Archive, StoredInstance
from storage.blobs import stage_blob
from storage.errors import NotFound, StorageUnavailable
from storage.index.tables import Base, Instance
from storage.query import stored_instances_select

_BATCH = 1000


@dataclass(slots=True)
class MoveReport:
    blobs_copied: int = 0
    blobs_present: int = 0
    """Already in the target (an earlier, interrupted run)."""
    unreadable: list[tuple[StoredInstance, str]] = field(default_factory=list)
    """Instances left behind: their blob is missing or corrupt in the source."""
    rows_copied: dict[str, int] = field(default_factory=dict)
    """Rows inserted or brought up to date, per table."""
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Rows per table: (source, target), after the move."""

    @property
    def complete(self) -> bool:
        return not self.unreadable and all(a == b for a, b in self.counts.values())


def relocate(
    source: Archive, target: Archive, *, progress: Callable[[int], None] | None = None
) -> MoveReport:
    """Copy every blob and every index row of `source` that `target` lacks.

    `progress` is called with the number of instances handled since its last call.
    """
    report = MoveReport()
    left_behind: set[int] = set()
    for instance, pk in _instances(source):
        if target.blobs.size(instance.blob_key) == instance.size:
            report.blobs_present += 1
        else:
            problem = _copy_blob(source, target, instance)
            if problem is None:
                report.blobs_copied += 1
            else:
                report.unreadable.append((instance, problem))
                left_behind.add(pk)
        if progress is not None:
            progress(1)
    # Parents before children, committed batch by batch: an interrupted run keeps what it
    # wrote, and every row it kept has its parents and its blob.
    with source.read() as reading, target.engine.connect() as writing:
        for table in Base.metadata.sorted_tables:
            skip = left_behind if table is Instance.__table__ else set()
            report.rows_copied[table.name] = _copy_rows(reading, writing, table, skip)
        if writing.dialect.name == "postgresql":
            _advance_sequences(writing)
            writing.commit()
    with source.read() as a, target.read() as b:
        for table in Base.metadata.sorted_tables:
            counted = select(func.count()).select_from(table)
            report.counts[table.name] = (int(a.scalar(counted) or 0), int(b.scalar(counted) or 0))
    return report


def _instances(archive: Archive) -> Iterator[tuple[StoredInstance, int]]:
    """Every instance with its primary key, streamed in key order."""
    with archive.read() as conn:
        query = stored_instances_select().add_columns(Instance.id.label("pk"))
        for row in conn.execution_options(stream_results=True, yield_per=_BATCH).execute(query):
            values = dict(row._mapping)
            pk = int(values.pop("pk"))
            yield StoredInstance(**values), pk


def _copy_blob(source: Archive, target: Archive, instance: StoredInstance) -> str | None:
    """Copy one blob under its own key; the reason it cannot be, or None."""
    try:
        staged = stage_blob(source.blobs, instance.blob_key, target.staging_dir, prefix="move-")
    except NotFound:
        return "the blob is missing"
    except OSError as exc:
        return f"the blob cannot be read: {exc}"
    if staged.sha256 != instance.sha256:
        staged.path.unlink(missing_ok=True)
        return "the blob's bytes differ from the SHA-256 recorded at arrival"
    try:
        target.blobs.put_staged(staged, key=instance.blob_key)
    except StorageUnavailable as exc:
        raise StorageUnavailable(f"the target blob store refused a blob: {exc}") from None
    return None


def _copy_rows(reading: Connection, writing: Connection, table: Table, skip: set[int]) -> int:
    """Insert the rows the target lacks and bring up to date those that changed since
    (a study's counts grow when an instance is added to it); the number written."""
    (pk,) = table.primary_key.columns
    written, last = 0, None
    while True:
        query = select(table).order_by(pk).limit(_BATCH)
        if last is not None:
            query = query.where(pk > last)
        rows = [dict(row._mapping) for row in reading.execute(query)]
        if not rows:
            return written
        last = rows[-1][pk.name]
        ids = [row[pk.name] for row in rows]
        present = {
            row[pk.name]: row
            for row in (
                dict(found._mapping) for found in writing.execute(select(table).where(pk.in_(ids)))
            )
        }
        fresh = [r for r in rows if r[pk.name] not in present and r[pk.name] not in skip]
        if fresh:
            writing.execute(table.insert(), fresh)
        changed = [r for r in rows if r[pk.name] in present and present[r[pk.name]] != r]
        for row in changed:
            writing.execute(table.update().where(pk == row[pk.name]).values(**row))
        writing.commit()
        written += len(fresh) + len(changed)


def _advance_sequences(conn: Connection) -> None:
    """Explicit keys were inserted: the next generated ones must come after them."""
    for table in Base.metadata.sorted_tables:
        (pk,) = table.primary_key.columns
        highest = int(conn.scalar(select(func.max(pk))) or 0)
        conn.execute(
            text("SELECT setval(pg_get_serial_sequence(:table, :column), :next, false)"),
            {"table": table.name, "column": pk.name, "next": highest + 1},
        )
