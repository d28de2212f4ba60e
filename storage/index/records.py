"""Writing one stored instance into the index: rows, derived counters, outbox, audit.

``record_instance`` runs inside the writer's transaction. It decides what a repeated SOP
Instance UID means (same bytes, different bytes) and returns which blob, if any, is no
longer referenced once the transaction commits. Statements are built once, at import, and
executed with bound parameters: on the ingest path, building SQL costs more than running it.
"""

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, func, insert, select, update

from storage.attributes import Kind, Level, stored_at
from storage.config import DuplicatePolicy
from storage.errors import InconsistentInstance
from storage.headers import InstanceHeader
from storage.index.prepared import Prepared
from storage.index.tables import AuditEvent, Base, Change, Instance, Patient, Series, Study


class Outcome(StrEnum):
    STORED = "stored"
    ALREADY_PRESENT = "already-present"  # same SOP Instance UID, same bytes
    KEPT_FIRST = "kept-first"  # same UID, different bytes, the first copy kept
    OVERWRITTEN = "overwritten"  # same UID, different bytes, replaced


@dataclass(frozen=True, slots=True)
class Source:
    """Who handed the instance to the archive."""

    kind: str  # "dimse", "import", "stow", "ai" (a model's result), "report" (a signed report)
    aet: str | None = None
    address: str | None = None
    hospital: str | None = None
    issuer: str | None = None
    """Issuer of Patient ID for instances that name none, if not the sender's default (a
    model's result takes that of the study it was made from)."""
    user: str | None = None
    """The signed-in user who sent it (STOW-RS)."""

    @property
    def actor(self) -> str:
        return self.user or self.aet or self.kind

    @property
    def default_issuer(self) -> str:
        """Issuer of Patient ID when the instance names none: the sending hospital."""
        return self.issuer or self.hospital or self.aet or self.kind.upper()


@dataclass(frozen=True, slots=True)
class IndexEntry:
    header: InstanceHeader
    blob_key: str
    sha256: str
    size: int
    source: Source


@dataclass(frozen=True, slots=True)
class RecordResult:
    outcome: Outcome
    obsolete_blob_key: str | None = None
    """A blob no longer referenced after commit (ours for a duplicate, the old one if replaced)."""
    notes: list[str] = field(default_factory=list)


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


_p, _st, _se, _i = (_table(t) for t in (Patient, Study, Series, Instance))
_changes, _audit = _table(Change), _table(AuditEvent)


def _columns(level: Level, *extra: str) -> list[str]:
    """The columns an insert at `level` sets: the extracted attributes, then `extra`."""
    names: list[str] = []
    for attribute in stored_at(level):
        names.append(attribute.column)
        if attribute.kind is Kind.NAME:
            names += [f"{attribute.column}_upper", f"{attribute.column}_folded"]
    return list(dict.fromkeys([*names, *extra]))


def _insert(table: Table, columns: list[str], *, returning: bool = False) -> Prepared:
    statement = insert(table).values({name: bindparam(name) for name in columns})
    return Prepared(statement.returning(table.c.id) if returning else statement)


_PATIENT_COLUMNS = _columns(
    Level.PATIENT,
    "hospital",
    "issuer",
    "patient_id",
    "citizen_id",
    "num_studies",
    "num_series",
    "num_instances",
    "created_at",
)
_STUDY_COLUMNS = _columns(
    Level.STUDY,
    "study_instance_uid",
    "patient_pk",
    "hospital",
    "num_series",
    "num_instances",
    "created_at",
    "updated_at",
)
_SERIES_COLUMNS = _columns(
    Level.SERIES, "series_instance_uid", "study_pk", "num_instances", "created_at"
)
_INSTANCE_COLUMNS = _columns(
    Level.IMAGE,
    "series_pk",
    "sop_instance_uid",
    "sop_class_uid",
    "transfer_syntax_uid",
    "size",
    "sha256",
    "blob_key",
    "header",
    "pixel_data_offset",
    "pixel_data_length",
    "source_aet",
    "source_address",
    "received_at",
)
_CHANGE_COLUMNS = ["kind", "study_instance_uid", "series_instance_uid", "sop_instance_uid", "at"]
_AUDIT_COLUMNS = [
    "at",
    "action",
    "outcome",
    "actor",
    "source_address",
    "hospital",
    "patient_id",
    "study_instance_uid",
    "detail",
]

_EXISTING = Prepared(
    select(_i.c.id, _i.c.sha256, _i.c.blob_key, _se.c.series_instance_uid, _st.c.hospital)
    .join(_se, _se.c.id == _i.c.series_pk)
    .join(_st, _st.c.id == _se.c.study_pk)
    .where(_i.c.sop_instance_uid == bindparam("b_uid"))
)
_PATIENT = Prepared(
    select(_p.c.id, _p.c.citizen_id).where(
        _p.c.hospital == bindparam("b_hospital"),
        _p.c.issuer == bindparam("b_issuer"),
        _p.c.patient_id == bindparam("b_patient_id"),
    )
)
_STUDY = Prepared(
    select(_st.c.id, _st.c.patient_pk, _st.c.sop_classes_in_study, _st.c.hospital).where(
        _st.c.study_instance_uid == bindparam("b_uid")
    )
)
_SERIES = Prepared(
    select(_se.c.id, _se.c.study_pk).where(_se.c.series_instance_uid == bindparam("b_uid"))
)
_MODALITIES = Prepared(
    select(_se.c.modality)
    .where(_se.c.study_pk == bindparam("b_pk"), _se.c.modality.is_not(None))
    .distinct()
)
_SET_CITIZEN_ID = Prepared(
    update(_p).where(_p.c.id == bindparam("b_pk")).values(citizen_id=bindparam("b_citizen_id"))
)
_INSERT_PATIENT = _insert(_p, _PATIENT_COLUMNS, returning=True)
_INSERT_STUDY = _insert(_st, _STUDY_COLUMNS, returning=True)
_INSERT_SERIES = _insert(_se, _SERIES_COLUMNS, returning=True)
_INSERT_INSTANCE = _insert(_i, _INSTANCE_COLUMNS)
_INSERT_CHANGE = _insert(_changes, _CHANGE_COLUMNS)
_INSERT_AUDIT = _insert(_audit, _AUDIT_COLUMNS)
_COUNT_SERIES = Prepared(
    update(_se).where(_se.c.id == bindparam("b_pk")).values(num_instances=_se.c.num_instances + 1)
)
_COUNT_STUDY = Prepared(
    update(_st)
    .where(_st.c.id == bindparam("b_pk"))
    .values(
        num_instances=_st.c.num_instances + 1,
        num_series=_st.c.num_series + bindparam("b_new_series"),
        updated_at=bindparam("b_now"),
        sop_classes_in_study=bindparam("b_classes"),
        modalities_in_study=func.coalesce(bindparam("b_modalities"), _st.c.modalities_in_study),
    )
)
_COUNT_PATIENT = Prepared(
    update(_p)
    .where(_p.c.id == bindparam("b_pk"))
    .values(
        num_instances=_p.c.num_instances + 1,
        num_series=_p.c.num_series + bindparam("b_new_series"),
        num_studies=_p.c.num_studies + bindparam("b_new_study"),
    )
)
_REPLACE_INSTANCE = update(_i).where(_i.c.id == bindparam("b_pk"))


def _row(columns: list[str], values: dict[str, Any]) -> dict[str, Any]:
    return {name: values.get(name) for name in columns}


def record_instance(
    conn: Connection, entry: IndexEntry, *, policy: DuplicatePolicy, now: datetime
) -> RecordResult:
    header = entry.header
    existing = _EXISTING.first(conn, {"b_uid": header.sop_instance_uid})
    if existing is not None:
        return _repeated(conn, entry, existing, policy=policy, now=now)

    notes: list[str] = []
    patient_pk = _patient(conn, entry, now, notes)
    study_pk, new_study, study_classes = _study(conn, entry, patient_pk, now, notes)
    series_pk, new_series = _series(conn, entry, study_pk, now)
    _INSERT_INSTANCE.run(conn, _row(_INSTANCE_COLUMNS, _instance_values(entry, series_pk, now)))

    classes = study_classes.split("\\") if study_classes else []
    if header.sop_class_uid not in classes:
        classes.append(header.sop_class_uid)
    modalities = None
    if new_series:
        found = _MODALITIES.execute(conn, {"b_pk": study_pk}).fetchall()
        modalities = "\\".join(sorted(row[0] for row in found if row[0]))
    _COUNT_SERIES.run(conn, {"b_pk": series_pk})
    _COUNT_STUDY.run(
        conn,
        {
            "b_pk": study_pk,
            "b_new_series": int(new_series),
            "b_now": now,
            "b_classes": "\\".join(classes),
            "b_modalities": modalities,
        },
    )
    _COUNT_PATIENT.run(
        conn,
        {"b_pk": patient_pk, "b_new_series": int(new_series), "b_new_study": int(new_study)},
    )
    _outbox_and_audit(conn, entry, "stored", now)
    return RecordResult(Outcome.STORED, notes=notes)


def _repeated(
    conn: Connection,
    entry: IndexEntry,
    existing: tuple[Any, ...],
    *,
    policy: DuplicatePolicy,
    now: datetime,
) -> RecordResult:
    header = entry.header
    existing_pk, existing_sha256, existing_key, existing_series, hospital = existing
    _check_hospital(entry, hospital)
    if existing_sha256 == entry.sha256:
        return RecordResult(Outcome.ALREADY_PRESENT, obsolete_blob_key=entry.blob_key)
    if policy is DuplicatePolicy.KEEP_FIRST:
        return RecordResult(Outcome.KEPT_FIRST, obsolete_blob_key=entry.blob_key)
    if existing_series != header.series_instance_uid:
        raise InconsistentInstance(
            f"SOP Instance {header.sop_instance_uid} is already stored in series "
            f"{existing_series}, not {header.series_instance_uid}"
        )
    values = _instance_values(entry, None, now)
    del values["series_pk"]
    conn.execute(_REPLACE_INSTANCE.values(**values), {"b_pk": existing_pk})
    _outbox_and_audit(conn, entry, "replaced", now)
    return RecordResult(Outcome.OVERWRITTEN, obsolete_blob_key=existing_key)


def _patient(conn: Connection, entry: IndexEntry, now: datetime, notes: list[str]) -> int:
    values = dict(entry.header.values[Level.PATIENT])
    values["issuer"] = values.get("issuer") or entry.source.default_issuer
    values["patient_id"] = values.get("patient_id") or ""
    values["hospital"] = entry.source.hospital or ""  # the sender's own record of them
    found = _PATIENT.first(
        conn,
        {
            "b_hospital": values["hospital"],
            "b_issuer": values["issuer"],
            "b_patient_id": values["patient_id"],
        },
    )
    if found is not None:
        patient_pk, citizen_id = found
        carried = values.get("citizen_id")
        if carried is not None and carried != citizen_id:  # the latest instance's number
            _SET_CITIZEN_ID.run(conn, {"b_pk": patient_pk, "b_citizen_id": carried})
            if citizen_id is not None:
                notes.append("the patient record's citizen identity number was replaced")
        return int(patient_pk)
    values.update(num_studies=0, num_series=0, num_instances=0, created_at=now)
    return int(_INSERT_PATIENT.scalar(conn, _row(_PATIENT_COLUMNS, values)))


def _study(
    conn: Connection, entry: IndexEntry, patient_pk: int, now: datetime, notes: list[str]
) -> tuple[int, bool, str | None]:
    uid = entry.header.study_instance_uid
    found = _STUDY.first(conn, {"b_uid": uid})
    if found is not None:
        study_pk, study_patient_pk, classes, hospital = found
        _check_hospital(entry, hospital)
        if study_patient_pk != patient_pk:
            notes.append(
                f"study {uid} belongs to another patient record; the instance is kept "
                "with the study's patient"
            )
        return int(study_pk), False, classes
    values = dict(entry.header.values[Level.STUDY])
    values.update(
        study_instance_uid=uid,
        patient_pk=patient_pk,
        hospital=entry.source.hospital,
        num_series=0,
        num_instances=0,
        created_at=now,
        updated_at=now,
    )
    return int(_INSERT_STUDY.scalar(conn, _row(_STUDY_COLUMNS, values))), True, None


def _check_hospital(entry: IndexEntry, owner: str | None) -> None:
    """A hospital adds to its own studies only: another's study is not changed (nor named)."""
    sender = entry.source.hospital
    if sender is not None and owner is not None and sender != owner:
        raise InconsistentInstance(
            f"study {entry.header.study_instance_uid} cannot take instances from {sender}"
        )


def _series(conn: Connection, entry: IndexEntry, study_pk: int, now: datetime) -> tuple[int, bool]:
    uid = entry.header.series_instance_uid
    found = _SERIES.first(conn, {"b_uid": uid})
    if found is not None:
        series_pk, series_study_pk = found
        if series_study_pk != study_pk:
            raise InconsistentInstance(
                f"series {uid} already belongs to another study than "
                f"{entry.header.study_instance_uid}"
            )
        return int(series_pk), False
    values = dict(entry.header.values[Level.SERIES])
    values.update(series_instance_uid=uid, study_pk=study_pk, num_instances=0, created_at=now)
    return int(_INSERT_SERIES.scalar(conn, _row(_SERIES_COLUMNS, values))), True


def _instance_values(entry: IndexEntry, series_pk: int | None, now: datetime) -> dict[str, Any]:
    header = entry.header
    values = dict(header.values[Level.IMAGE])
    values.update(
        series_pk=series_pk,
        sop_instance_uid=header.sop_instance_uid,
        sop_class_uid=header.sop_class_uid,
        transfer_syntax_uid=header.transfer_syntax_uid,
        size=entry.size,
        sha256=entry.sha256,
        blob_key=entry.blob_key,
        header=header.header_bytes,
        pixel_data_offset=header.pixel_data_offset,
        pixel_data_length=header.pixel_data_length,
        source_aet=entry.source.aet,
        source_address=entry.source.address,
        received_at=now,
    )
    return values


def _outbox_and_audit(conn: Connection, entry: IndexEntry, kind: str, now: datetime) -> None:
    header = entry.header
    if entry.source.kind in ("ai", "report"):  # results of reading make no work for models
        kind = "derived"
    _INSERT_CHANGE.run(
        conn,
        {
            "kind": kind,
            "study_instance_uid": header.study_instance_uid,
            "series_instance_uid": header.series_instance_uid,
            "sop_instance_uid": header.sop_instance_uid,
            "at": now,
        },
    )
    _INSERT_AUDIT.run(
        conn,
        {
            "at": now,
            "action": "store",
            "outcome": "success",
            "actor": entry.source.actor,
            "source_address": entry.source.address,
            "hospital": entry.source.hospital,
            "patient_id": header.values[Level.PATIENT].get("patient_id"),
            "study_instance_uid": header.study_instance_uid,
            "detail": f"{kind} {header.sop_instance_uid}",
        },
    )
