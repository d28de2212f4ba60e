"""The archive checked against itself: each indexed instance's blob present and intact
(re-hashed against the SHA-256 recorded when it arrived), each blob indexed.
"""

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from storage.archive import Archive, StoredInstance


class Problem(StrEnum):
    MISSING = "missing"
    """Indexed, but the blob store has no such blob."""
    CORRUPT = "corrupt"
    """The blob's bytes no longer hash to the recorded SHA-256."""
    ORPHAN = "orphan"
    """A blob that no index row points at (left by a crash between blob and index)."""


@dataclass(frozen=True, slots=True)
class Finding:
    problem: Problem
    blob_key: str
    instance: StoredInstance | None = None
    removed: bool = False
    """An orphan blob deleted by the repair."""


@dataclass(slots=True)
class Report:
    instances: int = 0
    """Indexed instances."""
    checked: int = 0
    """Instances whose blob was re-read."""
    blobs: int = 0
    """Blobs listed in the store (when orphans were looked for)."""
    findings: list[Finding] = field(default_factory=list)

    def count(self, problem: Problem) -> int:
        return sum(1 for finding in self.findings if finding.problem is problem)


def verify(
    archive: Archive,
    *,
    sample: float = 1.0,
    orphans: bool = True,
    remove_orphans_older_than: timedelta | None = None,
    progress: Callable[[int], None] | None = None,
    seed: int | None = None,
) -> Report:
    """Re-read all blobs, or a random `sample` fraction of them, and list what is wrong.

    With `remove_orphans_older_than`, orphan blobs written longer ago than that are
    deleted (a younger one may belong to an instance being stored right now). Missing and
    corrupt blobs are only reported: their bytes must come from a backup or the modality.
    `progress` is called with the number of instances handled since its last call.
    """
    if not 0 < sample <= 1:
        raise ValueError("the sample is a fraction in (0, 1]")
    chooser = random.Random(seed)  # noqa: S311 (sampling, not secrets)
    report = Report()
    indexed: set[str] = set()
    for instance in archive.iter_instances():
        report.instances += 1
        indexed.add(instance.blob_key)
        if sample == 1 or chooser.random() < sample:
            report.checked += 1
            problem = _check(archive, instance)
            if problem is not None:
                report.findings.append(Finding(problem, instance.blob_key, instance))
        if progress is not None:
            progress(1)
    if orphans:
        cutoff = None
        if remove_orphans_older_than is not None:
            cutoff = datetime.now(UTC) - remove_orphans_older_than
        for key in _blob_keys(archive):
            report.blobs += 1
            if key not in indexed:
                removed = cutoff is not None and _remove_orphan(archive, key, cutoff)
                report.findings.append(Finding(Problem.ORPHAN, key, removed=removed))
    return report


def _remove_orphan(archive: Archive, key: str, cutoff: datetime) -> bool:
    written = archive.blobs.modified(key)
    if written is None or written > cutoff or archive.is_indexed(key):
        return False  # gone, too young, or indexed since the listing
    archive.blobs.delete(key)
    return True


def _check(archive: Archive, instance: StoredInstance) -> Problem | None:
    if archive.blob_matches(instance.blob_key, instance.sha256):
        return None
    return Problem.CORRUPT if archive.blob_exists(instance.blob_key) else Problem.MISSING


def _blob_keys(archive: Archive) -> Iterator[str]:
    yield from archive.blobs.keys()
