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

from storage.attributes import Level
from storage.config import DuplicatePolicy
from storage.errors import InconsistentInstance
from storage.headers import InstanceHeader
from storage.index.tables import AuditEvent, Base, Change, Instance, Patient, Series, Study


class Outcome(StrEnum):
    STORED = "stored"
    ALREADY_PRESENT = "already-present"  # same SOP Instance UID, same bytes
    KEPT_FIRST = "kept-first"  # same UID, different bytes, the first copy kept
    OVERWRITTEN = "overwritten"  # same UID, different bytes, replaced


@dataclass(frozen=True, slots=True)
class Source:
    """Who handed the instance to the archive."""

    kind: str  # "dimse", "import", "stow"
    aet: str | None = None
    address: str | None = None
    hospital: str | None = None

    @property
    def actor(self) -> str:
        return self.aet or self.kind

    @property
    def default_issuer(self) -> str:
        """Issuer of Patient ID when the instance names none: the sending hospital."""
        return self.hospital or self.aet or self.kind.upper()


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

_EXISTING = (
    select(_i.c.id, _i.c.sha256, _i.c.blob_key, _se.c.series_instance_uid)
    .join(_se, _se.c.id == _i.c.series_pk)
    .where(_i.c.sop_instance_uid == bindparam("b_uid"))
)
_PATIENT = select(_p.c.id).where(
    _p.c.issuer == bindparam("b_issuer"), _p.c.patient_id == bindparam("b_patient_id")
)
_STUDY = select(_st.c.id, _st.c.patient_pk, _st.c.sop_classes_in_study).where(
    _st.c.study_instance_uid == bindparam("b_uid")
)
_SERIES = select(_se.c.id, _se.c.study_pk).where(_se.c.series_instance_uid == bindparam("b_uid"))
_MODALITIES = (
    select(_se.c.modality)
    .where(_se.c.study_pk == bindparam("b_pk"), _se.c.modality.is_not(None))
    .distinct()
)
_INSERT_PATIENT = insert(_p).returning(_p.c.id)
_INSERT_STUDY = insert(_st).returning(_st.c.id)
_INSERT_SERIES = insert(_se).returning(_se.c.id)
_INSERT_INSTANCE = insert(_i)
_COUNT_SERIES = (
    update(_se).where(_se.c.id == bindparam("b_pk")).values(num_instances=_se.c.num_instances + 1)
)
_COUNT_STUDY = (
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
_COUNT_PATIENT = (
    update(_p)
    .where(_p.c.id == bindparam("b_pk"))
    .values(
        num_instances=_p.c.num_instances + 1,
        num_series=_p.c.num_series + bindparam("b_new_series"),
        num_studies=_p.c.num_studies + bindparam("b_new_study"),
    )
)
_REPLACE_INSTANCE = update(_i).where(_i.c.id == bindparam("b_pk"))
_INSERT_CHANGE = insert(_changes)
_INSERT_AUDIT = insert(_audit)


def record_instance(
    conn: Connection, entry: IndexEntry, *, policy: DuplicatePolicy, now: datetime
) -> RecordResult:
    header = entry.header
    existing = conn.execute(_EXISTING, {"b_uid": header.sop_instance_uid}).first()
    if existing is not None:
        return _repeated(conn, entry, existing, policy=policy, now=now)

    notes: list[str] = []
    patient_pk = _patient(conn, entry)
    study_pk, new_study, study_classes = _study(conn, entry, patient_pk, now, notes)
    series_pk, new_series = _series(conn, entry, study_pk, now)
    conn.execute(_INSERT_INSTANCE, _instance_values(entry, series_pk, now))

    classes = study_classes.split("\\") if study_classes else []
    if header.sop_class_uid not in classes:
        classes.append(header.sop_class_uid)
    modalities = None
    if new_series:
        found = conn.scalars(_MODALITIES, {"b_pk": study_pk}).all()
        modalities = "\\".join(sorted(m for m in found if m))
    conn.execute(_COUNT_SERIES, {"b_pk": series_pk})
    conn.execute(
        _COUNT_STUDY,
        {
            "b_pk": study_pk,
            "b_new_series": int(new_series),
            "b_now": now,
            "b_classes": "\\".join(classes),
            "b_modalities": modalities,
        },
    )
    conn.execute(
        _COUNT_PATIENT,
        {"b_pk": patient_pk, "b_new_series": int(new_series), "b_new_study": int(new_study)},
    )
    _outbox_and_audit(conn, entry, "stored", now)
    return RecordResult(Outcome.STORED, notes=notes)


def _repeated(
    conn: Connection, entry: IndexEntry, existing: Any, *, policy: DuplicatePolicy, now: datetime
) -> RecordResult:
    header = entry.header
    if existing.sha256 == entry.sha256:
        return RecordResult(Outcome.ALREADY_PRESENT, obsolete_blob_key=entry.blob_key)
    if policy is DuplicatePolicy.KEEP_FIRST:
        return RecordResult(Outcome.KEPT_FIRST, obsolete_blob_key=entry.blob_key)
    if existing.series_instance_uid != header.series_instance_uid:
        raise InconsistentInstance(
            f"SOP Instance {header.sop_instance_uid} is already stored in series "
            f"{existing.series_instance_uid}, not {header.series_instance_uid}"
        )
    values = _instance_values(entry, None, now)
    del values["series_pk"]
    conn.execute(_REPLACE_INSTANCE.values(**values), {"b_pk": existing.id})
    _outbox_and_audit(conn, entry, "replaced", now)
    return RecordResult(Outcome.OVERWRITTEN, obsolete_blob_key=existing.blob_key)


def _patient(conn: Connection, entry: IndexEntry) -> int:
    values = dict(entry.header.values[Level.PATIENT])
    values["issuer"] = values.get("issuer") or entry.source.default_issuer
    values["patient_id"] = values.get("patient_id") or ""
    found = conn.scalar(
        _PATIENT, {"b_issuer": values["issuer"], "b_patient_id": values["patient_id"]}
    )
    if found is not None:
        return int(found)
    values.update(num_studies=0, num_series=0, num_instances=0)
    return int(conn.execute(_INSERT_PATIENT, values).scalar_one())


def _study(
    conn: Connection, entry: IndexEntry, patient_pk: int, now: datetime, notes: list[str]
) -> tuple[int, bool, str | None]:
    uid = entry.header.study_instance_uid
    found = conn.execute(_STUDY, {"b_uid": uid}).first()
    if found is not None:
        if found.patient_pk != patient_pk:
            notes.append(
                f"study {uid} belongs to another patient record; the instance is kept "
                "with the study's patient"
            )
        return int(found.id), False, found.sop_classes_in_study
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
    return int(conn.execute(_INSERT_STUDY, values).scalar_one()), True, None


def _series(conn: Connection, entry: IndexEntry, study_pk: int, now: datetime) -> tuple[int, bool]:
    uid = entry.header.series_instance_uid
    found = conn.execute(_SERIES, {"b_uid": uid}).first()
    if found is not None:
        if found.study_pk != study_pk:
            raise InconsistentInstance(
                f"series {uid} already belongs to another study than "
                f"{entry.header.study_instance_uid}"
            )
        return int(found.id), False
    values = dict(entry.header.values[Level.SERIES])
    values.update(series_instance_uid=uid, study_pk=study_pk, num_instances=0, created_at=now)
    return int(conn.execute(_INSERT_SERIES, values).scalar_one()), True


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
    conn.execute(
        _INSERT_CHANGE,
        {
            "kind": kind,
            "study_instance_uid": header.study_instance_uid,
            "series_instance_uid": header.series_instance_uid,
            "sop_instance_uid": header.sop_instance_uid,
            "at": now,
        },
    )
    conn.execute(
        _INSERT_AUDIT,
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
