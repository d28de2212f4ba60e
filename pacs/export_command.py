"""`pacs export`: studies as a zip of DICOM files, de-identified for research and teaching.

De-identification follows PS3.15 Annex E (see :mod:`storage.deidentify`). The zip is
written one file at a time (``<patient>/<study n>/<series n>/<instance n>.dcm``), each
instance spooled through a temporary file, never a whole study in memory.
"""

import os
import re
import secrets
import shutil
import tempfile
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from pacs.console import (
    PROGRESS_COLUMNS,
    DataDir,
    console,
    errors,
    open_archive,
    os_user,
    settings_from,
)
from storage import (
    Archive,
    CannotDeidentify,
    InstanceDetails,
    InvalidQuery,
    Level,
    NotFound,
    StorageUnavailable,
    build_query,
)
from storage.deidentify import Deidentifier

_SPOOL_BYTES = 32 * 1024 * 1024
"""An instance larger than this is spooled to disk on its way into the zip."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(slots=True)
class _Layout:
    """Numbers the folders of the zip: patient → study n → series n → instance n."""

    studies: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    series: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    instances: Counter[str] = field(default_factory=Counter)

    def name(self, patient: str, instance: InstanceDetails) -> str:
        studies = self.studies[patient]
        study_n = studies.setdefault(instance.study_instance_uid, len(studies) + 1)
        series = self.series[instance.study_instance_uid]
        series_n = series.setdefault(instance.series_instance_uid, len(series) + 1)
        self.instances[instance.series_instance_uid] += 1
        number = self.instances[instance.series_instance_uid]
        folder = _UNSAFE.sub("_", patient).strip("._") or "patient"
        return f"{folder}/{study_n}/{series_n}/{number}.dcm"


@dataclass(slots=True)
class _Tally:
    written: Counter[str] = field(default_factory=Counter)
    refused: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))

    def refuse(self, instance: InstanceDetails, reason: str) -> None:
        self.refused[instance.study_instance_uid].append((instance.sop_instance_uid, reason))


def export(
    study_uids: Annotated[
        list[str] | None, typer.Argument(help="Study Instance UIDs to export", show_default=False)
    ] = None,
    patient_id: Annotated[
        str | None, typer.Option("--patient-id", help="Also every study of this Patient ID")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="The zip to write [default: export-<time>.zip]", dir_okay=False),
    ] = None,
    deidentify: Annotated[
        bool,
        typer.Option(help="De-identify (PS3.15 Annex E basic profile), or export originals"),
    ] = True,
    salt_file: Annotated[
        Path | None,
        typer.Option(
            help="Secret salt of the pseudonyms (default: a new one, saved as <zip>.salt)",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    allow_burned_in: Annotated[
        bool,
        typer.Option(
            "--allow-burned-in",
            help="Also export US, SC, OT and Burned In Annotation YES instances",
        ),
    ] = False,
    shift_dates: Annotated[
        bool,
        typer.Option(
            "--shift-dates", help="Keep dates, moved back by a per-patient offset (else removed)"
        ),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Export studies as a zip of DICOM files, de-identified by default; audited."""
    if not study_uids and not patient_id:
        errors.print("[red]Nothing to export:[/] give Study Instance UIDs or --patient-id")
        raise typer.Exit(2)
    target = out or Path(f"export-{datetime.now():%Y%m%d-%H%M%S}.zip")
    deidentifier = None
    if deidentify:
        deidentifier = Deidentifier(
            _salt(salt_file, target), shift_dates=shift_dates, allow_burned_in=allow_burned_in
        )
    actor = os_user()
    with open_archive(settings_from(data_dir=data_dir)) as archive:
        try:
            studies = _studies(archive, list(study_uids or []), patient_id)
        except (InvalidQuery, StorageUnavailable) as exc:
            errors.print(f"[red]Cannot find the studies:[/] {escape(exc.reason)}")
            raise typer.Exit(2) from None
        tally = _Tally()
        kind = "de-identified" if deidentifier else "original"
        try:
            _write_zip(archive, studies, target, deidentifier, tally)
        finally:  # an export that broke off is audited too, with what it wrote
            for study_uid, instances in studies.items():
                written, refused = tally.written[study_uid], tally.refused.get(study_uid, [])
                reasons = "; ".join(sorted({reason for _, reason in refused}))
                archive.audit(
                    action="export",
                    outcome=_outcome(len(instances), written),
                    actor=actor,
                    study_instance_uid=study_uid,
                    detail=f"{kind} zip {target.resolve()}: {written} written, "
                    f"{len(refused)} refused{': ' + reasons if reasons else ''}",
                )
    _report(target, studies, tally)
    if not sum(tally.written.values()) or not all(studies.values()):
        raise typer.Exit(1)


def _outcome(total: int, written: int) -> str:
    if total and written == total:
        return "success"
    return "partial" if written else "failure"


def _salt(salt_file: Path | None, target: Path) -> bytes:
    if salt_file is not None:
        salt = salt_file.read_bytes().strip()
        if len(salt) < 16:
            errors.print(f"[red]The salt in {salt_file} is too short[/] (16 bytes at least)")
            raise typer.Exit(2)
        return salt
    salt_path = target.with_name(target.name + ".salt")
    salt = secrets.token_hex(32).encode()
    salt_path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(salt_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(salt + b"\n")
    console.print(
        f"New salt written to {salt_path}: keep it secret, and give it again with "
        "--salt-file so later exports reuse the same pseudonyms and UIDs."
    )
    return salt


def _studies(
    archive: Archive, study_uids: list[str], patient_id: str | None
) -> dict[str, list[InstanceDetails]]:
    """Each study asked for (the patient's too) → its instances, by series and number."""
    if patient_id:
        if any(wildcard in patient_id for wildcard in "*?\\"):
            raise InvalidQuery(f"--patient-id {patient_id!r} must be one ID, not a pattern")
        matches = archive.find(
            build_query(Level.STUDY, {"PatientID": patient_id, "IssuerOfPatientID": ""})
        )
        issuers = {str(match.values.get("IssuerOfPatientID") or "") for match in matches}
        if len(issuers) > 1:  # two hospitals' patients share the number
            raise InvalidQuery(
                f"patient ID {patient_id} belongs to patients of several issuers "
                f"({', '.join(sorted(issuers))}); give their studies' UIDs instead"
            )
        study_uids += [str(match.values["StudyInstanceUID"]) for match in matches]
    studies: dict[str, list[InstanceDetails]] = {}
    for uid in dict.fromkeys(study_uids):
        query = build_query(Level.STUDY, {"StudyInstanceUID": uid})
        studies[uid] = archive.instance_details(query)
    return studies


def _write_zip(
    archive: Archive,
    studies: dict[str, list[InstanceDetails]],
    target: Path,
    deidentifier: Deidentifier | None,
    tally: "_Tally",
) -> None:
    """Write the zip next to `target` and move it in place once complete, counting in
    `tally`."""
    layout = _Layout()
    partial = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    total = sum(len(instances) for instances in studies.values())
    with (
        zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as bundle,
        Progress(*PROGRESS_COLUMNS, console=errors) as progress,
    ):
        task = progress.add_task("Exporting", total=total)
        for instances in studies.values():
            for instance in instances:
                try:
                    _write_instance(archive, bundle, layout, instance, deidentifier)
                except (CannotDeidentify, NotFound, StorageUnavailable) as exc:
                    tally.refuse(instance, exc.reason)
                except Exception as exc:  # a header pydicom cannot write back, and the like
                    tally.refuse(instance, f"cannot be written: {type(exc).__name__}: {exc}")
                else:
                    tally.written[instance.study_instance_uid] += 1
                progress.advance(task)
    partial.replace(target)


def _write_instance(
    archive: Archive,
    bundle: zipfile.ZipFile,
    layout: _Layout,
    instance: InstanceDetails,
    deidentifier: Deidentifier | None,
) -> None:
    header = archive.header_of(instance)
    if deidentifier is None:
        name = layout.name(str(header.get("PatientID", "")), instance)
        with archive.blob_file(instance.blob_key) as path:
            bundle.write(path, name)
        return
    reason = deidentifier.refusal(header)
    if reason is not None:  # refused before its blob is read
        raise CannotDeidentify(reason)
    with (
        tempfile.SpooledTemporaryFile(_SPOOL_BYTES, dir=str(archive.staging_dir)) as spool,
        archive.blob_file(instance.blob_key) as path,
        path.open("rb") as source,
    ):
        deidentifier.write_file(source, spool)  # the whole file, before its zip entry opens
        spool.seek(0)
        name = layout.name(deidentifier.patient_pseudonym(header), instance)
        with bundle.open(name, "w", force_zip64=True) as entry:
            shutil.copyfileobj(spool, entry, 1 << 20)


def _report(target: Path, studies: dict[str, list[InstanceDetails]], tally: _Tally) -> None:
    table = Table(title="Export", show_header=False)
    table.add_row("zip", str(target))
    table.add_row("studies", str(len(studies)))
    table.add_row("instances written", str(sum(tally.written.values())))
    table.add_row("instances refused", str(sum(len(r) for r in tally.refused.values())))
    console.print(table)
    for study_uid, instances in studies.items():
        if not instances:
            console.print(f"[yellow]not found[/] study {study_uid}")
    for refused in tally.refused.values():
        for sop_uid, reason in refused:
            console.print(f"[red]refused[/] SOP Instance {sop_uid}: {escape(reason)}")
