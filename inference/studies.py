"""What the index says of a study, for routing it to models: its hospital, its series, and
the stored files of the series a model will read. Read from the index, never from files."""

from dataclasses import dataclass

from sqlalchemy import func, select

from inference.routing import SeriesFacts
from storage import Archive
from storage.index.tables import Instance, Patient, Series, Study


@dataclass(frozen=True, slots=True)
class StudyFacts:
    study_instance_uid: str
    hospital: str | None
    issuer: str
    """The Issuer of Patient ID of the study's patient record (results go to the same)."""
    series: list[SeriesFacts]


def study_facts(archive: Archive, study_instance_uid: str) -> StudyFacts | None:
    """The study's hospital and series, or None if the study is not in the archive."""
    with archive.read() as conn:
        study = conn.execute(
            select(Study.id, Study.hospital, Patient.issuer)
            .join(Patient, Study.patient_pk == Patient.id)
            .where(Study.study_instance_uid == study_instance_uid)
        ).first()
        if study is None:
            return None
        rows = conn.execute(
            select(
                Series.series_instance_uid,
                Series.series_number,
                Series.modality,
                Series.body_part_examined,
                Series.view_position,
                Series.series_description,
                func.count(Instance.id),
                func.min(Instance.slice_thickness),
                func.max(Instance.slice_thickness),
            )
            .join(Instance, Instance.series_pk == Series.id)
            .where(Series.study_pk == study.id)
            .group_by(Series.id)
        ).all()
    series = [
        SeriesFacts(
            series_instance_uid=uid,
            series_number=number,
            modality=(modality or "").upper(),
            body_part=(part or "").upper(),
            view_position=(view or "").upper(),
            description=description or "",
            instances=count,
            slice_thickness=None if thinnest is None else (thinnest, thickest or thinnest),
        )
        for uid, number, modality, part, view, description, count, thinnest, thickest in rows
    ]
    return StudyFacts(study_instance_uid, study.hospital, study.issuer, series)


def series_blobs(archive: Archive, series_instance_uid: str) -> list[str]:
    """The blob keys of the series' instances, in instance number order."""
    with archive.read() as conn:
        return list(
            conn.scalars(
                select(Instance.blob_key)
                .join(Series, Instance.series_pk == Series.id)
                .where(Series.series_instance_uid == series_instance_uid)
                .order_by(Instance.instance_number, Instance.id)
            )
        )
