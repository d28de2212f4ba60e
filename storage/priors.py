"""Priors: the same person's other studies, from any hospital of the province, for reading
beside the current one; and the records that may be the same person, for a radiologist to
confirm.

Patient records are per hospital and never merged. One person's records are found from the
current study's record (``same-record``) by two relations, followed through each other:
the same citizen identity number (``citizen-id``, when both records carry one), and a
person's confirmation that two records are one (``patient_links``; a record found through
one is ``confirmed``). A record whose citizen identity number differs from the person's is
never followed, whatever link points to it. Records with the same diacritic-folded name,
birth date and sex whose numbers do not contradict are only ``suggested``: they become
priors when someone confirms them.

Every answer is narrowed to the studies the reader's scope may see: a prior from another
hospital shows only where a share (or an administrator's scope) lets the reader see it.
"""

from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from sqlalchemy import Connection, delete, func, insert, or_, select, update

from storage.access import Actor
from storage.archive import Archive, write_audit
from storage.attributes import Level
from storage.citizen_ids import citizen_id
from storage.errors import InvalidGrant
from storage.index.tables import Instance, Patient, PatientLink, Series, Study
from storage.query import build_query
from storage.scope import Scope, visible_patients, visible_studies, visible_study

MAX_RECORDS = 64
"""The most records of one person followed (24 hospitals, a few records each): a chain of
wrong links costs bounded work."""
MAX_SUGGESTIONS = 20


def priors(archive: Archive, study_uid: str, scope: Scope) -> list[dict[str, Any]]:
    """The person's other studies `scope` may see, newest first, each with its ``match``.

    Raises:
        NotFound: `scope` may not see the study.
    """
    now = datetime.now(UTC)
    with archive.read() as conn:
        study_pk = visible_study(conn, study_uid, scope)
        patient_pk = _patient_of(conn, study_pk)
        person, _ = _person(conn, patient_pk)
        found = _studies(conn, list(person), scope, now, but=study_pk)
    for study in found:
        study["match"] = person[study.pop("patient_pk")]
    return found


def suggestions(archive: Archive, study_uid: str, scope: Scope) -> list[dict[str, Any]]:
    """Records that may be the study's person (same folded name, birth date and sex; no
    contradicting citizen identity number), not already theirs, of which `scope` may see
    a study; each with those studies and ``match`` = ``suggested``.

    Raises:
        NotFound: `scope` may not see the study.
    """
    now = datetime.now(UTC)
    with archive.read() as conn:
        patient_pk = _patient_of(conn, visible_study(conn, study_uid, scope))
        name, birth_date, sex = conn.execute(
            select(Patient.patient_name_folded, Patient.birth_date, Patient.sex).where(
                Patient.id == patient_pk
            )
        ).one()
        if not (name and birth_date and sex):
            return []
        person, citizen_id = _person(conn, patient_pk)
        query = select(
            Patient.id,
            Patient.hospital,
            Patient.patient_id,
            Patient.patient_name,
            Patient.birth_date,
            Patient.sex,
        ).where(
            Patient.patient_name_folded == name,
            Patient.birth_date == birth_date,
            Patient.sex == sex,
            Patient.id.not_in(list(person)),
            visible_patients(scope, now),
        )
        if citizen_id is not None:  # another number is another person
            query = query.where(or_(Patient.citizen_id.is_(None), Patient.citizen_id == citizen_id))
        records = [
            dict(row._mapping)
            for row in conn.execute(query.order_by(Patient.id).limit(MAX_SUGGESTIONS))
        ]
        studies = _studies(conn, [r["id"] for r in records], scope, now)
    for record in records:
        pk = record.pop("id")
        record["studies"] = [s for s in studies if s["patient_pk"] == pk]
        record["match"] = "suggested"
    for study in studies:
        del study["patient_pk"]
    return records


def confirm_link(archive: Archive, study_uid: str, other_study_uid: str, *, by: Actor) -> bool:
    """Record that the two studies' patient records are one person (they stay two records);
    whether the link is new (confirming it again changes nothing). Audited.

    Raises:
        NotFound: `by` may not see one of the studies.
        InvalidGrant: the studies are of one record, or their people carry different
            citizen identity numbers.
    """

    def write(conn: Connection, now: datetime) -> bool:
        a, b = _two_records(conn, study_uid, other_study_uid, by.scope)
        first, second = _person(conn, a)[1], _person(conn, b)[1]
        if first is not None and second is not None and first != second:
            raise InvalidGrant(
                "the two patients carry different citizen identity numbers: not one person"
            )
        low, high = sorted((a, b))
        exists = conn.scalar(
            select(PatientLink.id).where(
                PatientLink.patient_a == low, PatientLink.patient_b == high
            )
        )
        if exists is None:
            conn.execute(
                insert(PatientLink).values(
                    patient_a=low, patient_b=high, confirmed_by=by.name, confirmed_at=now
                )
            )
        _audit(
            conn,
            now,
            by,
            a,
            study_uid,
            f"patient records confirmed as one person with study {other_study_uid}"
            + ("" if exists is None else " (already confirmed)"),
        )
        return exists is None

    return archive.run_write(write)


def remove_link(archive: Archive, study_uid: str, other_study_uid: str, *, by: Actor) -> bool:
    """Undo a confirmation between the two studies' records; whether there was one. Audited.

    Raises:
        NotFound: `by` may not see one of the studies.
        InvalidGrant: the studies are of one record.
    """

    def write(conn: Connection, now: datetime) -> bool:
        a, b = _two_records(conn, study_uid, other_study_uid, by.scope)
        low, high = sorted((a, b))
        removed = conn.execute(
            delete(PatientLink).where(PatientLink.patient_a == low, PatientLink.patient_b == high)
        ).rowcount
        _audit(
            conn,
            now,
            by,
            a,
            study_uid,
            f"patient records no longer one person with study {other_study_uid}"
            + ("" if removed else " (they were not linked)"),
        )
        return bool(removed)

    return archive.run_write(write)


def _person(conn: Connection, patient_pk: int) -> tuple[dict[int, str], str | None]:
    """The records of the person whose record is `patient_pk`, each with how it was first
    reached (``same-record``, ``citizen-id``, ``confirmed``); and their citizen identity
    number, if any record carries one (the record's own first, then the nearest)."""
    citizen_id = conn.scalar(select(Patient.citizen_id).where(Patient.id == patient_pk))
    found = {patient_pk: "same-record"}
    frontier = [patient_pk]
    if citizen_id is not None:
        frontier += _by_citizen_id(conn, citizen_id, found, "citizen-id")
    while frontier and len(found) < MAX_RECORDS:
        linked = conn.execute(
            select(PatientLink.patient_a, PatientLink.patient_b).where(
                or_(PatientLink.patient_a.in_(frontier), PatientLink.patient_b.in_(frontier))
            )
        ).all()
        new = sorted({pk for pair in linked for pk in pair} - found.keys())
        frontier = []
        for pk, number in conn.execute(
            select(Patient.id, Patient.citizen_id).where(Patient.id.in_(new)).order_by(Patient.id)
        ):
            if len(found) >= MAX_RECORDS:
                break
            if number is not None and citizen_id is not None and number != citizen_id:
                continue  # another person's number: a wrong link is not followed
            found[pk] = "confirmed"
            frontier.append(pk)
            if number is not None and citizen_id is None:
                citizen_id = number
                frontier += _by_citizen_id(conn, number, found, "confirmed")
    return found, citizen_id


def _by_citizen_id(conn: Connection, number: str, found: dict[int, str], how: str) -> list[int]:
    """Add the records carrying `number` to `found`; the new ones."""
    new = []
    for pk in conn.scalars(
        select(Patient.id).where(Patient.citizen_id == number).order_by(Patient.id)
    ):
        if pk not in found and len(found) < MAX_RECORDS:
            found[pk] = how
            new.append(pk)
    return new


def _studies(
    conn: Connection, patients: list[int], scope: Scope, now: datetime, *, but: int | None = None
) -> list[dict[str, Any]]:
    """The studies of `patients` that `scope` may see (but `but`), newest first."""
    if not patients:
        return []
    query = select(
        Study.id,
        Study.patient_pk,
        Study.study_instance_uid,
        Study.study_date,
        Study.study_time,
        Study.study_description,
        Study.modalities_in_study,
        Study.hospital,
        Study.created_at,
    ).where(Study.patient_pk.in_(patients), visible_studies(scope, now))
    if but is not None:
        query = query.where(Study.id != but)
    rows = sorted(
        conn.execute(query),
        key=lambda r: (r.study_date or "", r.study_time or "", r.created_at, r.id),
        reverse=True,
    )
    return [
        {
            "patient_pk": row.patient_pk,
            "study_instance_uid": row.study_instance_uid,
            "study_date": row.study_date,
            "study_time": row.study_time,
            "study_description": row.study_description,
            "modalities": row.modalities_in_study.split("\\") if row.modalities_in_study else [],
            "hospital": row.hospital,
        }
        for row in rows
    ]


def _patient_of(conn: Connection, study_pk: int) -> int:
    return int(conn.execute(select(Study.patient_pk).where(Study.id == study_pk)).scalar_one())


def _two_records(conn: Connection, study_uid: str, other_uid: str, scope: Scope) -> tuple[int, int]:
    a = _patient_of(conn, visible_study(conn, study_uid, scope))
    b = _patient_of(conn, visible_study(conn, other_uid, scope))
    if a == b:
        raise InvalidGrant("the two studies are of one patient record already")
    return a, b


def _audit(
    conn: Connection, now: datetime, by: Actor, patient_pk: int, study_uid: str, detail: str
) -> None:
    write_audit(
        conn,
        now,
        action="patient-link",
        actor=by.name,
        role=by.role,
        hospital=by.hospital,
        source_address=by.source_address,
        patient_id=conn.scalar(select(Patient.patient_id).where(Patient.id == patient_pk)),
        study_instance_uid=study_uid,
        detail=detail,
    )


def backfill_citizen_ids(
    archive: Archive, progress: Callable[[int], None] | None = None
) -> tuple[int, int]:
    """Read the CCCD of patient records that have none (stored before the archive read it,
    or under other settings) from one stored header of each; (records read, records that
    got a number). Records are only ever given a number here, never changed."""
    with archive.read() as conn:
        pending = conn.execute(
            select(Patient.id, func.min(Instance.sop_instance_uid))
            .join(Study, Study.patient_pk == Patient.id)
            .join(Series, Series.study_pk == Study.id)
            .join(Instance, Instance.series_pk == Series.id)
            .where(Patient.citizen_id.is_(None))
            .group_by(Patient.id)
        ).all()
    found = 0
    for patient_pk, sop_uid in pending:
        number = _stored_citizen_id(archive, sop_uid)
        if number is not None:
            archive.run_write(partial(_give_citizen_id, patient_pk=patient_pk, number=number))
            found += 1
        if progress is not None:
            progress(1)
    return len(pending), found


def _stored_citizen_id(archive: Archive, sop_uid: str) -> str | None:
    found = archive.instance_details(build_query(Level.IMAGE, {"SOPInstanceUID": sop_uid}))
    if not found:
        return None
    header = archive.header_of(found[0])
    return citizen_id(lambda tag: header[tag].value if tag in header else None, archive.citizen_ids)


def _give_citizen_id(conn: Connection, _now: datetime, *, patient_pk: int, number: str) -> None:
    conn.execute(
        update(Patient)
        .where(Patient.id == patient_pk, Patient.citizen_id.is_(None))
        .values(citizen_id=number)
    )
