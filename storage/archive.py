"""The archive: index and blobs together, behind the few verbs the edges need.

Storing follows one rule, whatever the edge (C-STORE, import, STOW-RS): the instance is
checked, its blob made durable, and its index rows (with the outbox and audit rows)
committed, in that order, before :meth:`Archive.store` returns. Anything that fails on the
way leaves nothing behind.
"""

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Required, TypedDict, TypeVar, Unpack

from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import Connection, Engine, func, insert, select
from sqlalchemy.exc import SQLAlchemyError

from storage.blobs import BlobStore, open_blob_store, stage_blob
from storage.citizen_ids import CitizenIdSource
from storage.config import DuplicatePolicy, NameMatching, StorageSettings
from storage.errors import (
    CommitUncertain,
    InconsistentInstance,
    NotFound,
    StorageError,
    StorageUnavailable,
)
from storage.headers import InstanceHeader, read_header
from storage.index.engine import create_index_engine, migrate
from storage.index.records import IndexEntry, Outcome, RecordResult, Source, record_instance
from storage.index.tables import AuditEvent, Instance, Patient, Series, Study
from storage.index.writer import IndexWriter
from storage.query import (
    Match,
    Query,
    find,
    find_instances,
    instance_details,
    parse_header_bytes,
    stored_instances_select,
)
from storage.staging import StagedFile, sync_staged

log = logging.getLogger(__name__)

T = TypeVar("T")

STAGING_MAX_AGE = 3600.0
"""Staged files older than this (seconds) are leftovers of a crash and are removed."""


@dataclass(frozen=True, slots=True)
class StoreResult:
    outcome: Outcome
    sop_instance_uid: str
    study_instance_uid: str
    size: int
    sop_class_uid: str = ""
    series_instance_uid: str = ""


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """Where an instance's bytes are and what they are, for retrieval."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    study_instance_uid: str
    blob_key: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class InstanceDetails:
    """An instance as DICOMweb serves it: UIDs, bytes, stored header, pixel data extent."""

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    transfer_syntax_uid: str
    blob_key: str
    size: int
    sha256: str
    header: bytes | None
    pixel_data_offset: int | None
    pixel_data_length: int | None
    number_of_frames: int | None


class AuditFields(TypedDict, total=False):
    """What an audit row says; `outcome` is "success" unless given."""

    action: Required[str]
    actor: Required[str | None]
    outcome: str
    role: str | None
    source_address: str | None
    hospital: str | None
    patient_id: str | None
    study_instance_uid: str | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class ArchiveStats:
    patients: int
    studies: int
    series: int
    instances: int
    bytes: int


class Archive:
    def __init__(self, *, engine: Engine, blobs: BlobStore, settings: StorageSettings) -> None:
        self.engine = engine
        self.blobs = blobs
        self.settings = settings
        self._writer = IndexWriter(engine, wait=settings.index_timeout)
        self._sync_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fsync")
        self._inflate_limit = (
            settings.inflate_limit_mb * 1024 * 1024 if settings.accept_deflated else None
        )
        self._citizen_ids = CitizenIdSource.parse(
            settings.citizen_id_issuers, settings.citizen_id_tag
        )

    @classmethod
    def open(cls, settings: StorageSettings) -> "Archive":
        """Open (and create or upgrade) the archive that `settings` describe."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_index_engine(settings.resolved_database_url)
        try:
            migrate(engine)
        except SQLAlchemyError as exc:
            engine.dispose()
            raise StorageUnavailable(f"cannot open the index database: {exc}") from None
        archive = cls(engine=engine, blobs=open_blob_store(settings), settings=settings)
        archive.clean_staging()
        return archive

    def close(self) -> None:
        self.blobs.close()
        self._writer.close()
        self._sync_pool.shutdown(wait=True)
        self.engine.dispose()

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def staging_dir(self) -> Path:
        return self.blobs.staging_dir

    @property
    def citizen_ids(self) -> CitizenIdSource:
        """Where this site's instances carry the citizen identity number."""
        return self._citizen_ids

    @property
    def fold_names(self) -> bool:
        return self.settings.name_matching is NameMatching.FOLDED

    # -- storing -------------------------------------------------------------------------

    def store(
        self,
        staged: StagedFile,
        *,
        source: Source,
        expected: tuple[str, str] | None = None,
    ) -> StoreResult:
        """Check, make durable and index one staged instance; the staged file is used up.

        Args:
            staged: the complete file, hashed.
            source: who sent it (for the issuer default, the audit row and logs).
            expected: (SOP Class UID, SOP Instance UID) the sender announced, if any.

        Raises:
            InvalidInstance, InconsistentInstance, StorageUnavailable (CommitUncertain: the
            index may still commit it, so its blob is kept). Each names the instance
            (``instance``) once its header was read.
        """
        header: InstanceHeader | None = None
        try:
            # The staged bytes are fsynced while the header is parsed: I/O and CPU overlap.
            synced = (
                self._sync_pool.submit(sync_staged, staged) if self.blobs.stages_durably else None
            )
            try:
                header = read_header(
                    staged.path, inflate_limit=self._inflate_limit, citizen_ids=self._citizen_ids
                )
            finally:
                if synced is not None:
                    staged = _result(synced, staged)
            if expected is not None and expected != (header.sop_class_uid, header.sop_instance_uid):
                raise InconsistentInstance(
                    f"the dataset's SOP Class/Instance UIDs {header.sop_class_uid} / "
                    f"{header.sop_instance_uid} differ from the request's "
                    f"{expected[0]} / {expected[1]}"
                )
            self._check_free_space(staged.size)
            key = self.blobs.put_staged(staged)
        except BaseException as exc:
            staged.path.unlink(missing_ok=True)
            _name_refused(exc, header)
            raise
        entry = IndexEntry(header, key, staged.sha256, staged.size, source)
        try:
            result: RecordResult = self._writer.run(
                partial(_record, entry=entry, policy=self.settings.duplicate_policy)
            )
        except BaseException as exc:
            if not isinstance(exc, CommitUncertain):  # the index may yet point at the blob
                self.blobs.delete(key)
            _name_refused(exc, header)
            raise
        if result.obsolete_blob_key:
            self.blobs.delete(result.obsolete_blob_key)
        for note in result.notes:
            log.warning("Instance %s from %s: %s", header.sop_instance_uid, source.actor, note)
        if result.outcome is Outcome.KEPT_FIRST:
            log.warning(
                "SOP Instance %s was sent again by %s with different bytes; the first copy "
                "is kept (PACS_DUPLICATE_POLICY=keep-first)",
                header.sop_instance_uid,
                source.actor,
            )
        elif result.outcome is Outcome.OVERWRITTEN:
            log.warning(
                "SOP Instance %s was sent again by %s with different bytes; it replaced the "
                "stored copy (PACS_DUPLICATE_POLICY=overwrite)",
                header.sop_instance_uid,
                source.actor,
            )
        return StoreResult(
            result.outcome,
            header.sop_instance_uid,
            header.study_instance_uid,
            staged.size,
            header.sop_class_uid,
            header.series_instance_uid,
        )

    def _check_free_space(self, size: int) -> None:
        free = self.blobs.free_bytes()
        reserve = self.settings.min_free_mb * 1024 * 1024
        if free is not None and free - size < reserve:
            raise StorageUnavailable(
                f"disk full: {free // 2**20} MiB free, PACS_MIN_FREE_MB is "
                f"{self.settings.min_free_mb}"
            )

    def clean_staging(self, max_age: float = STAGING_MAX_AGE) -> int:
        """Remove staged files left by a crash; return how many."""
        cutoff = time.time() - max_age
        removed = 0
        for path in self.staging_dir.iterdir():
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    # -- reading -------------------------------------------------------------------------

    def find(self, query: Query) -> list[Match]:
        with self.read() as conn:
            return find(conn, query, fold_names=self.fold_names)

    def read(self) -> Connection:
        """A connection for reads; raises StorageUnavailable when the database is down."""
        try:
            return self.engine.connect()
        except SQLAlchemyError as exc:
            raise StorageUnavailable(f"the index database cannot be read: {exc}") from None

    def stored_instances(self, query: Query) -> list[StoredInstance]:
        """The instances under what `query` matches (any level), for retrieval."""
        with self.read() as conn:
            rows = find_instances(conn, query, fold_names=self.fold_names)
        return [StoredInstance(**row) for row in rows]

    def instance_details(self, query: Query) -> list[InstanceDetails]:
        """The instances under what `query` matches, by series and instance number."""
        with self.read() as conn:
            rows = instance_details(conn, query, fold_names=self.fold_names)
        return [InstanceDetails(**row) for row in rows]

    def header_of(self, instance: InstanceDetails) -> Dataset:
        """The instance's dataset without pixel data: from the index, or (for the rare
        header too large to keep there) from the blob.

        Raises:
            NotFound, StorageUnavailable.
        """
        if instance.header is not None:
            return parse_header_bytes(instance.header)
        try:
            with self.blobs.open(instance.blob_key) as blob:
                return dcmread(blob, stop_before_pixels=True, force=True)
        except OSError as exc:
            raise StorageUnavailable(f"cannot read blob {instance.blob_key}: {exc}") from None

    def read_range(self, blob_key: str, offset: int, length: int) -> bytes:
        """Bytes of a blob (a frame, a bulk data value); raises NotFound, StorageUnavailable."""
        try:
            return self.blobs.read_range(blob_key, offset, length)
        except OSError as exc:
            raise StorageUnavailable(f"cannot read blob {blob_key}: {exc}") from None

    @contextmanager
    def blob_file(self, blob_key: str) -> Iterator[Path]:
        """A local file with the blob's bytes: the blob itself when the store is local, else
        a copy streamed into the staging folder and removed afterwards.

        Raises:
            NotFound, StorageUnavailable.
        """
        path = self.blobs.local_path(blob_key)
        if path is not None:
            if not path.is_file():
                raise NotFound(f"blob {blob_key} is missing")
            yield path
            return
        try:
            copy = stage_blob(self.blobs, blob_key, self.staging_dir, prefix="out-")
        except OSError as exc:
            raise StorageUnavailable(f"cannot read blob {blob_key}: {exc}") from None
        try:
            yield copy.path
        finally:
            copy.path.unlink(missing_ok=True)

    def is_indexed(self, blob_key: str) -> bool:
        """Whether an index row points at the blob."""
        with self.read() as conn:
            found = conn.execute(select(Instance.id).where(Instance.blob_key == blob_key))
            return found.first() is not None

    def blob_exists(self, blob_key: str) -> bool:
        return self.blobs.size(blob_key) is not None

    def blob_pending(self, blob_key: str) -> bool:
        """Whether the blob is durable on this node only, its upload to S3 still to come."""
        return self.blobs.is_pending(blob_key)

    def blob_matches(self, blob_key: str, sha256: str) -> bool:
        """Whether the blob is present and its bytes hash to `sha256`."""
        digest = hashlib.sha256()
        try:
            with self.blobs.open(blob_key) as blob:
                while chunk := blob.read(1 << 20):
                    digest.update(chunk)
        except (NotFound, OSError):
            return False
        return digest.hexdigest() == sha256

    def stats(self) -> ArchiveStats:
        with self.read() as conn:
            return ArchiveStats(
                patients=conn.scalar(select(func.count()).select_from(Patient)) or 0,
                studies=conn.scalar(select(func.count()).select_from(Study)) or 0,
                series=conn.scalar(select(func.count()).select_from(Series)) or 0,
                instances=conn.scalar(select(func.count()).select_from(Instance)) or 0,
                bytes=conn.scalar(select(func.coalesce(func.sum(Instance.size), 0))) or 0,
            )

    # -- audit ---------------------------------------------------------------------------

    def audit(self, **fields: Unpack[AuditFields]) -> None:
        """Append an audit row, committed with the index writer's next batch (not awaited).

        Stores write their audit row in their own transaction; this is for the rest
        (associations, queries, retrievals), which must not wait for a disk flush.
        Rows queued together are inserted together (``IndexWriter.append``).
        """
        row = _audit_row(fields)
        try:
            self._writer.append(_AUDIT_INSERT, lambda now: {"at": now, **row})
        except StorageUnavailable as exc:
            log.error(
                "Audit row for %s by %s could not be written: %s", row["action"], row["actor"], exc
            )

    def run_write(self, work: Callable[[Connection, datetime], T]) -> T:
        """Run `work(connection, now)` on the index writer; return once it is committed."""
        return self._writer.run(work)

    def iter_instances(self) -> Iterator[StoredInstance]:
        """Every instance, in index order (for verification)."""
        with self.read() as conn:
            for row in conn.execute(stored_instances_select()):
                yield StoredInstance(**row._mapping)


_AUDIT_INSERT = insert(AuditEvent)
"""One statement for every audit row (compiled once, values bound per row)."""


_AUDIT_DEFAULTS: dict[str, object] = {"outcome": "success"} | dict.fromkeys(
    ("role", "source_address", "hospital", "patient_id", "study_instance_uid", "detail")
)
"""Every column an audit row fills: rows inserted together must name the same ones."""


def _audit_row(fields: AuditFields) -> dict[str, object]:
    return {**_AUDIT_DEFAULTS, **fields}


def write_audit(conn: Connection, now: datetime, **fields: Unpack[AuditFields]) -> None:
    """Append an audit row in the caller's transaction (a change and its row commit
    together)."""
    conn.execute(_AUDIT_INSERT, {"at": now, **_audit_row(fields)})


def _name_refused(exc: BaseException, header: InstanceHeader | None) -> None:
    """Name the instance in the archive's refusal of it, once its header was read."""
    if isinstance(exc, StorageError) and header is not None:
        exc.instance = (header.sop_class_uid, header.sop_instance_uid)


def _result(future: "Future[StagedFile]", staged: StagedFile) -> StagedFile:
    """The synced staged file, or the unsynced one if fsync failed (put_staged retries it)."""
    try:
        return future.result()
    except OSError:
        return staged


def _record(
    conn: Connection, now: datetime, *, entry: IndexEntry, policy: DuplicatePolicy
) -> RecordResult:
    return record_instance(conn, entry, policy=policy, now=now)
