"""A flag announced to a webhook (a paging system, a chat channel, the hospital's RIS).

A thread of its own in `pacs serve` calls :meth:`Webhook.deliver_due` every second or so;
each flagged job of an announced severity that has not been delivered is POSTed as JSON.
A delivery counts once the receiver answers 2xx; until then it is tried again with a
growing pause (2 s, 4 s, ... up to 5 minutes), at most ``attempts`` times. Each attempt is
claimed and counted in the index before it is made, and the pause is kept there too, so
that neither a restart nor several nodes running the webhook send a flag twice. The
notice names the study, not the patient: the receiver opens the study through the
archive.
"""

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Connection, or_, select, update

from storage import Archive
from storage.index.tables import InferenceJob

log = logging.getLogger(__name__)

TIMEOUT = 10.0
MAX_PAUSE = 300.0


class Webhook:
    def __init__(
        self,
        archive: Archive,
        url: str,
        *,
        severities: list[str],
        attempts: int,
        first_pause: float = 2.0,
    ) -> None:
        self._archive = archive
        self._url = url
        self._severities = severities
        self._attempts = attempts
        self._first_pause = first_pause
        self._client = httpx.Client(timeout=TIMEOUT)

    def deliver_due(self) -> int:
        """Try every flag that is due; return how many were delivered."""
        return sum(self._post(job) for job in self._undelivered() if self._claim(job))

    def _claim(self, job: dict[str, Any]) -> bool:
        """Count this attempt and hold the flag while it is sent, so that no other node
        sends it at the same time (the job's lease column, unused once it is done)."""

        def write(conn: Connection, at: datetime) -> bool:
            done = conn.execute(
                update(InferenceJob)
                .where(
                    InferenceJob.id == job["id"],
                    InferenceJob.notify_attempts == job["notify_attempts"],
                    InferenceJob.notified_at.is_(None),
                )
                .values(
                    notify_attempts=job["notify_attempts"] + 1,
                    claimed_until=at + timedelta(seconds=TIMEOUT + 5),
                )
            )
            return bool(done.rowcount == 1)

        return self._archive.run_write(write)

    def _undelivered(self) -> list[dict[str, Any]]:
        """Flags to announce that no node holds now and whose pause after a failed
        attempt has run out."""
        now = datetime.now(UTC)
        table = InferenceJob.__table__
        with self._archive.read() as conn:
            rows = conn.execute(
                select(table)
                .where(
                    table.c.state == "done",
                    table.c.flagged.is_(True),
                    table.c.severity.in_(self._severities),
                    table.c.notified_at.is_(None),
                    table.c.notify_attempts < self._attempts,
                    or_(table.c.claimed_until.is_(None), table.c.claimed_until < now),
                )
                .order_by(table.c.id)
                .limit(50)
            )
            return [dict(row._mapping) for row in rows]

    def _post(self, job: dict[str, Any]) -> bool:
        notice = {
            "event": "ai.flag",
            "severity": job["severity"],
            "finding": job["finding"],
            "study_instance_uid": job["study_instance_uid"],
            "series_instance_uid": job["series_instance_uid"],
            "result_sop_instance_uid": job["result_sop_instance_uid"],
            "hospital": job["hospital"],
            "model": job["model"],
            "model_version": job["model_version"],
            "score": job["score"],
            "threshold": job["threshold"],
            "flagged_at": _iso(job["updated_at"]),
            "note": "AI triage, not a diagnosis",
        }
        attempt = job["notify_attempts"] + 1
        try:
            answer = self._client.post(self._url, json=notice)
            ok = 200 <= answer.status_code < 300
            why = f"HTTP {answer.status_code}"
        except httpx.HTTPError as exc:
            ok, why = False, f"{type(exc).__name__}: {exc}"

        pause = timedelta(seconds=min(MAX_PAUSE, self._first_pause * 2 ** job["notify_attempts"]))

        def record(conn: Connection, at: datetime) -> None:
            conn.execute(
                update(InferenceJob)
                .where(InferenceJob.id == job["id"])
                .values(
                    notified_at=at if ok else None,
                    claimed_until=None if ok else at + pause,  # the next try, on any node
                )
            )

        self._archive.run_write(record)
        if ok:
            log.info("AI flag of study %s announced to the webhook", job["study_instance_uid"])
        else:
            log.warning(
                "AI flag of study %s: webhook attempt %d of %d failed: %s",
                job["study_instance_uid"],
                attempt,
                self._attempts,
                why,
            )
        return ok

    def close(self) -> None:
        self._client.close()


def _iso(moment: datetime) -> str:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()
