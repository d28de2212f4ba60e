"""A flag announced to a webhook (a paging system, a chat channel, the hospital's RIS).

The dispatcher calls :meth:`Webhook.deliver_due` every second or so; each flagged job of
an announced severity that has not been delivered is POSTed as JSON. A delivery counts
once the receiver answers 2xx; until then it is tried again with a growing pause (2 s,
4 s, ... up to 5 minutes), at most ``attempts`` times, and each attempt is counted in the
index, so a restart neither loses a flag nor repeats a delivered one. The notice names
the study, not the patient: the receiver opens the study through the archive.
"""

import logging
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import Connection, select, update

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
        self._next_try: dict[int, float] = {}
        self._client = httpx.Client(timeout=TIMEOUT)

    def deliver_due(self) -> int:
        """Try every flag that is due; return how many were delivered."""
        now = time.monotonic()
        delivered = 0
        for job in self._undelivered():
            if self._next_try.get(job["id"], 0.0) > now:
                continue
            if self._post(job):
                delivered += 1
                self._next_try.pop(job["id"], None)
            else:
                pause = min(MAX_PAUSE, self._first_pause * 2 ** job["notify_attempts"])
                self._next_try[job["id"]] = now + pause
        return delivered

    def _undelivered(self) -> list[dict[str, Any]]:
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

        def record(conn: Connection, at: datetime) -> None:
            conn.execute(
                update(InferenceJob)
                .where(InferenceJob.id == job["id"])
                .values(notify_attempts=attempt, notified_at=at if ok else None)
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
