"""Radiologists' verdicts on AI findings, and what they say of each model: how often it
flags, how often the reader agrees, its positive predictive value as readers judge it, and
whether flagged studies are read sooner than the rest."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from statistics import median
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from storage.archive import Archive, write_audit
from storage.errors import NotFound
from storage.index.tables import AiReview, InferenceJob, Report, ReportVersion, Study
from storage.scope import Scope, visible_studies, visible_study

VERDICTS = ("agree", "disagree")


def review(
    archive: Archive,
    job_id: int,
    scope: Scope,
    reviewer: str,
    verdict: str,
    correct_label: str | None = None,
    *,
    role: str | None = None,
    source_address: str | None = None,
) -> None:
    """Keep `reviewer`'s verdict on a finished job's finding (a new verdict replaces
    theirs). Audited.

    Raises NotFound: no such finished job on a study `scope` may see.
    """

    def write(conn: Connection, now: datetime) -> None:
        job = conn.execute(
            select(InferenceJob.study_instance_uid, InferenceJob.model, InferenceJob.hospital)
            .join(Study, Study.study_instance_uid == InferenceJob.study_instance_uid)
            .where(
                InferenceJob.id == job_id,
                InferenceJob.state == "done",
                visible_studies(scope, now),
            )
        ).one_or_none()
        if job is None:  # the same answer whether it exists elsewhere or not at all
            raise NotFound(f"no finished AI job {job_id}")
        values = {"verdict": verdict, "correct_label": correct_label, "updated_at": now}
        changed = conn.execute(
            update(AiReview)
            .where(AiReview.job_id == job_id, AiReview.reviewer == reviewer)
            .values(**values)
        ).rowcount
        if not changed:
            conn.execute(
                insert(AiReview).values(job_id=job_id, reviewer=reviewer, created_at=now, **values)
            )
        write_audit(
            conn,
            now,
            action="ai-review",
            actor=reviewer,
            role=role,
            source_address=source_address,
            hospital=job.hospital,
            study_instance_uid=job.study_instance_uid,
            detail=f"{job.model} job {job_id}: {verdict}"
            + (f" ({correct_label})" if correct_label else ""),
        )

    archive.run_write(write)


def findings_of(archive: Archive, study_uid: str, scope: Scope) -> list[dict[str, Any]]:
    """The study's finished AI jobs, newest first, each with the readers' verdicts.

    Raises NotFound: `scope` may not see the study.
    """
    with archive.read() as conn:
        visible_study(conn, study_uid, scope)
        jobs = [
            dict(row._mapping)
            for row in conn.execute(
                select(
                    InferenceJob.id,
                    InferenceJob.model,
                    InferenceJob.model_version,
                    InferenceJob.finding,
                    InferenceJob.score,
                    InferenceJob.threshold,
                    InferenceJob.flagged,
                    InferenceJob.severity,
                    InferenceJob.series_instance_uid,
                    InferenceJob.result_sop_instance_uid,
                    InferenceJob.updated_at,
                )
                .where(InferenceJob.study_instance_uid == study_uid, InferenceJob.state == "done")
                .order_by(InferenceJob.id.desc())
            )
        ]
        reviews = conn.execute(
            select(
                AiReview.job_id,
                AiReview.reviewer,
                AiReview.verdict,
                AiReview.correct_label,
                AiReview.updated_at,
            ).where(AiReview.job_id.in_([job["id"] for job in jobs]))
        )
        by_job: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for row in reviews:
            values = dict(row._mapping)
            by_job[values.pop("job_id")].append(values)
    for job in jobs:
        job["reviews"] = by_job.get(job["id"], [])
    return jobs


@dataclass
class _Tally:
    studies: set[str]
    flagged: set[str]
    reviewed: int = 0
    agreed: int = 0
    flagged_reviewed: int = 0
    flagged_agreed: int = 0


def performance(archive: Archive, scope: Scope) -> list[dict[str, Any]]:
    """Per model, over the studies `scope` may see: studies read by the model, flags, reader
    verdicts, agreement rate, positive predictive value (flags readers agreed with, of
    flags reviewed) and the median minutes from arrival to a final report, for flagged and
    unflagged studies."""
    with archive.read() as conn:
        jobs = conn.execute(
            select(
                InferenceJob.id,
                InferenceJob.model,
                InferenceJob.study_instance_uid,
                InferenceJob.flagged,
            )
            .join(Study, Study.study_instance_uid == InferenceJob.study_instance_uid)
            .where(InferenceJob.state == "done", visible_studies(scope))
        ).all()
        verdicts = conn.execute(
            select(AiReview.job_id, AiReview.verdict)
            .join(InferenceJob, InferenceJob.id == AiReview.job_id)
            .join(Study, Study.study_instance_uid == InferenceJob.study_instance_uid)
            .where(visible_studies(scope))
        ).all()
        first_final = (
            select(
                Report.study_pk.label("study_pk"),
                func.min(ReportVersion.signed_at).label("final_at"),
            )
            .join(ReportVersion, ReportVersion.report_id == Report.id)
            .where(ReportVersion.status == "final")
            .group_by(Report.study_pk)
            .subquery()
        )
        read_times = {
            row.study_instance_uid: (row.final_at - row.created_at).total_seconds() / 60
            for row in conn.execute(
                select(Study.study_instance_uid, Study.created_at, first_final.c.final_at)
                .join(first_final, first_final.c.study_pk == Study.id)
                .where(visible_studies(scope))
            )
        }
    model_of = {job.id: job for job in jobs}
    tallies: dict[str, _Tally] = defaultdict(lambda: _Tally(set(), set()))
    for each in jobs:
        tally = tallies[each.model]
        tally.studies.add(each.study_instance_uid)
        if each.flagged:
            tally.flagged.add(each.study_instance_uid)
    for job_id, verdict in verdicts:
        if job_id not in model_of:
            continue
        job = model_of[job_id]
        tally = tallies[job.model]
        agreed = verdict == "agree"
        tally.reviewed += 1
        tally.agreed += agreed
        if job.flagged:
            tally.flagged_reviewed += 1
            tally.flagged_agreed += agreed
    return [
        {
            "model": model,
            "studies": len(tally.studies),
            "flags": len(tally.flagged),
            "reviewed": tally.reviewed,
            "agreed": tally.agreed,
            "agreement_rate": _ratio(tally.agreed, tally.reviewed),
            "positive_predictive_value": _ratio(tally.flagged_agreed, tally.flagged_reviewed),
            "minutes_to_final_flagged": _median(read_times, tally.flagged),
            "minutes_to_final_unflagged": _median(read_times, tally.studies - tally.flagged),
        }
        for model, tally in sorted(tallies.items())
    ]


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _median(times: dict[str, float], studies: set[str]) -> float | None:
    found = [times[uid] for uid in studies if uid in times]
    return round(median(found), 1) if found else None
