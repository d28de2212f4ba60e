"""The AI jobs as the index keeps them, for anyone to read: the API, the CLI, the worklist.

The inference service writes these rows; this module only reads them, so that the viewer
API can show a study's AI state without importing the inference package.
"""

from typing import Any

from sqlalchemy import select

from storage.archive import Archive
from storage.index.tables import InferenceJob, Study
from storage.scope import EVERYTHING, Scope, visible_studies

STATES = ("queued", "running", "done", "failed", "skipped")
PUBLIC_COLUMNS = (
    "id",
    "study_instance_uid",
    "hospital",
    "model",
    "model_version",
    "state",
    "reason",
    "attempts",
    "series_instance_uid",
    "finding",
    "score",
    "threshold",
    "flagged",
    "severity",
    "weights_sha256",
    "result_sop_instance_uid",
    "created_at",
    "updated_at",
)


def list_jobs(
    archive: Archive,
    *,
    study: str | None = None,
    state: str | None = None,
    model: str | None = None,
    flagged: bool | None = None,
    limit: int = 50,
    offset: int = 0,
    scope: Scope = EVERYTHING,
) -> list[dict[str, Any]]:
    """Jobs matching every filter given, of studies `scope` may see, newest first, as
    plain values."""
    table = InferenceJob.__table__
    query = select(*(table.c[name] for name in PUBLIC_COLUMNS))
    if not scope.everything:
        query = query.join(Study, Study.study_instance_uid == table.c.study_instance_uid).where(
            visible_studies(scope)
        )
    for column, value in (
        ("study_instance_uid", study),
        ("state", state),
        ("model", model),
        ("flagged", flagged),
    ):
        if value is not None:
            query = query.where(table.c[column] == value)
    query = query.order_by(table.c.id.desc()).limit(limit).offset(offset)
    with archive.read() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]
