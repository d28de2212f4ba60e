"""Each hospital's choice for each model: on or off, and its decision threshold.

A threshold chosen on one population does not carry over to another (the chest X-ray
model was trained on children), so a hospital calibrates its own (``pacs model evaluate
--apply``) and turns models on or off (``pacs model set``). The hospital ``*`` holds the
site's default; a hospital's own row wins over it, and the bundle's metadata (its
threshold, and whether the model is on by default) is the last word. Every change is kept
with who made it and on what evidence, and written to the audit trail in the same
transaction.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select, update

from inference.bundles import BundleInfo
from storage import Archive
from storage.archive import write_audit
from storage.index.tables import AiModelSetting

SITE = "*"
"""The hospital code of the site-wide default."""


@dataclass(frozen=True, slots=True)
class Choice:
    """What applies to one hospital's studies for one model."""

    enabled: bool
    threshold: float
    source: str
    """Where the threshold came from: ``bundle``, ``site`` or ``hospital CODE``."""


@dataclass(frozen=True, slots=True)
class SettingRow:
    hospital: str
    model: str
    enabled: bool | None
    threshold: float | None
    updated_by: str
    evidence: str | None
    updated_at: datetime


def rows(archive: Archive, model: str | None = None) -> list[SettingRow]:
    """Every stored choice (of `model`, if given), site default first."""
    table = AiModelSetting.__table__
    query = select(
        table.c.hospital,
        table.c.model,
        table.c.enabled,
        table.c.threshold,
        table.c.updated_by,
        table.c.evidence,
        table.c.updated_at,
    ).order_by(table.c.model, table.c.hospital)
    if model is not None:
        query = query.where(table.c.model == model)
    with archive.read() as conn:
        return [SettingRow(**row._mapping) for row in conn.execute(query)]


def resolve(
    info: BundleInfo, stored: list[SettingRow], hospital: str | None, *, default_on: bool
) -> Choice:
    """The choice for `hospital`'s studies from the stored rows of `info`'s model."""
    enabled, threshold, source = default_on, info.threshold, "bundle"
    for code in (SITE, hospital):
        for row in stored:
            if row.model != info.name or row.hospital != code or code is None:
                continue
            if row.enabled is not None:
                enabled = row.enabled
            if row.threshold is not None:
                threshold = row.threshold
                source = "site" if code == SITE else f"hospital {code}"
    return Choice(enabled, threshold, source)


def threshold_problem(info: BundleInfo, threshold: float) -> str | None:
    """Why `threshold` cannot be `info`'s: a score is between 0 and 1, a quantity (the
    bundle's ``threshold_unit``, such as mL) is 0 or more."""
    unit = info.metadata.get("threshold_unit")
    if unit:
        if not 0.0 <= threshold < float("inf"):
            return f"{info.name}'s threshold is in {unit}, 0 or more, not {threshold:g}"
    elif not 0.0 <= threshold <= 1.0:
        return f"{info.name}'s threshold is a score between 0 and 1, not {threshold:g}"
    return None


def set_choice(
    archive: Archive,
    model: str,
    hospital: str,
    *,
    by: str,
    enabled: bool | None = None,
    threshold: float | None = None,
    evidence: str | None = None,
) -> None:
    """Record `hospital`'s choice for `model` (``*``: the site default) and audit it."""
    if threshold is not None and not 0.0 <= threshold < float("inf"):
        raise ValueError(f"a threshold is a finite number, 0 or more, not {threshold}")
    changes: dict[str, object] = {"updated_by": by}
    if evidence is not None:  # a change without evidence keeps what an earlier one gave
        changes["evidence"] = evidence
    if enabled is not None:
        changes["enabled"] = enabled
    if threshold is not None:
        changes["threshold"] = threshold
    said = ", ".join(
        part
        for part in (
            None if enabled is None else ("enabled" if enabled else "disabled"),
            None if threshold is None else f"threshold {threshold:.4f}",
            None if evidence is None else f"evidence: {evidence}",
        )
        if part
    )

    def write(conn: Connection, now: datetime) -> None:
        where = (AiModelSetting.hospital == hospital) & (AiModelSetting.model == model)
        done = conn.execute(update(AiModelSetting).where(where).values(updated_at=now, **changes))
        if done.rowcount == 0:
            conn.execute(
                insert(AiModelSetting).values(
                    hospital=hospital, model=model, updated_at=now, **changes
                )
            )
        write_audit(
            conn,
            now,
            action="ai-setting",
            actor=by,
            hospital=None if hospital == SITE else hospital,
            detail=f"{model}: {said}",
        )

    archive.run_write(write)
