"""`pacs export`: studies as a zip of DICOM files or sent to another DICOM node,
de-identified for research and teaching.

De-identification follows PS3.15 Annex E (see :mod:`storage.deidentify`). The zip is
written one file at a time (``<patient>/<study n>/<series n>/<instance n>.dcm``), each
instance spooled through a temporary file, never a whole study in memory; to a registered
peer (``--to``), each de-identified instance is written to a temporary file and sent over
one association, with DICOM TLS to a peer registered with ``--tls``.
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

from dicom_node import DicomSettings
from dicom_node.sender import PeerSender, SendFailed
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
    BY_KEYWORD,
    Archive,
    CannotDeidentify,
    InstanceDetails,
    InvalidQuery,
    Level,
    NotFound,
    Peer,
    PeerRegistry,
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
    where: Annotated[
        list[str] | None,
        typer.Option(
            "--where",
            help="Also every study matching KEYWORD=VALUE, as in a C-FIND (repeat for "
            "several: --where ModalitiesInStudy=CT --where StudyDate=20260101-20260131)",
            show_default=False,
        ),
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
            help="Secret salt of the pseudonyms (default: a new one, saved as <zip>.salt, "
            "or export-to-<peer>-<time>.salt with --to)",
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
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Send to this registered DICOM peer (its name or AE title) instead of a zip",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Export studies as a zip of DICOM files, or to a DICOM peer; de-identified by
    default; audited."""
    if not study_uids and not patient_id and not where:
        errors.print("[red]Nothing to export:[/] give Study Instance UIDs, --patient-id or --where")
        raise typer.Exit(2)
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    target = out or Path(f"export-{stamp}.zip")
    actor = os_user()
    settings = settings_from(data_dir=data_dir)
    with open_archive(settings) as archive:
        peer = _peer(archive, to) if to else None
        deidentifier = None
        if deidentify:  # a new salt is kept beside the zip, or named after the peer
            kept_as = target if peer is None else Path(f"export-to-{peer.name}-{stamp}")
            deidentifier = Deidentifier(
                _salt(salt_file, kept_as), shift_dates=shift_dates, allow_burned_in=allow_burned_in
            )
        try:
            studies = _studies(archive, list(study_uids or []), patient_id, list(where or []))
        except (InvalidQuery, StorageUnavailable) as exc:
            errors.print(f"[red]Cannot find the studies:[/] {escape(exc.reason)}")
            raise typer.Exit(2) from None
        tally = _Tally()
        kind = "de-identified" if deidentifier else "original"
        destination = f"zip {target.resolve()}"
        try:
            if peer is None:
                _write_zip(archive, studies, target, deidentifier, tally)
            else:
                over = ", TLS" if peer.tls else ""
                destination = f"to {peer.name} ({peer.aet}@{peer.host}:{peer.port}{over})"
                _send(archive, studies, peer, deidentifier, tally, settings=settings)
        except SendFailed as exc:
            errors.print(f"[red]The export to {escape(to or '')} broke off:[/] {escape(str(exc))}")
        finally:  # an export that broke off is audited too, with what it wrote
            for study_uid, instances in studies.items():
                written, refused = tally.written[study_uid], tally.refused.get(study_uid, [])
                reasons = "; ".join(sorted({reason for _, reason in refused}))
                archive.audit(
                    action="export",
                    outcome=_outcome(len(instances), written),
                    actor=actor,
                    study_instance_uid=study_uid,
                    hospital=peer.hospital if peer else None,
                    detail=f"{kind} {destination}: {written} written, "
                    f"{len(refused)} refused{': ' + reasons if reasons else ''}",
                )
    _report(target if peer is None else None, studies, tally, peer)
    if not sum(tally.written.values()) or not all(studies.values()):
        raise typer.Exit(1)


def _peer(archive: Archive, name: str) -> Peer:
    found = [p for p in PeerRegistry(archive.engine).list() if name in (p.name, p.aet)]
    if not found:
        errors.print(f"[red]No registered peer called {escape(name)}[/] (pacs remote list)")
        raise typer.Exit(2)
    return found[0]


def _key_value(item: str) -> tuple[str, str]:
    keyword, equals, value = item.partition("=")
    if not equals or not keyword.strip():
        raise InvalidQuery(f"--where {item!r} is not KEYWORD=VALUE")
    if keyword.strip() not in BY_KEYWORD:
        raise InvalidQuery(f"--where {keyword.strip()!r} is not a key the index can match")
    return keyword.strip(), value.strip()


def _send(
    archive: Archive,
    studies: dict[str, list[InstanceDetails]],
    peer: Peer,
    deidentifier: Deidentifier | None,
    tally: "_Tally",
    *,
    settings: DicomSettings,
) -> None:
    """C-STORE each instance (de-identified into a temporary file first) to `peer`, as
    ``settings.aet`` (over DICOM TLS with its TLS files if `peer` is a TLS peer)."""
    instances = [i for found in studies.values() for i in found]
    kinds = [(i.sop_class_uid, i.transfer_syntax_uid) for i in instances]
    with (
        PeerSender(peer, kinds, settings=settings) as sender,
        Progress(*PROGRESS_COLUMNS, console=errors) as progress,
    ):
        task = progress.add_task(f"Sending to {peer.aet}", total=len(instances))
        for instance in instances:
            try:
                status = _send_instance(archive, sender, instance, deidentifier)
            except (CannotDeidentify, NotFound, StorageUnavailable) as exc:
                tally.refuse(instance, exc.reason)
            else:
                if status == 0:
                    tally.written[instance.study_instance_uid] += 1
                else:
                    tally.refuse(instance, f"{peer.aet} answered status 0x{status:04X}")
            progress.advance(task)


def _send_instance(
    archive: Archive,
    sender: PeerSender,
    instance: InstanceDetails,
    deidentifier: Deidentifier | None,
) -> int:
    if deidentifier is None:
        with archive.blob_file(instance.blob_key) as path:
            return sender.send(path)
    header = archive.header_of(instance)
    reason = deidentifier.refusal(header)
    if reason is not None:
        raise CannotDeidentify(reason)
    with tempfile.TemporaryDirectory(dir=str(archive.staging_dir)) as folder:
        path = Path(folder) / "instance.dcm"
        with (
            archive.blob_file(instance.blob_key) as stored,
            stored.open("rb") as source,
            path.open("wb") as target,
        ):
            deidentifier.write_file(source, target)
        return sender.send(path)


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
    archive: Archive, study_uids: list[str], patient_id: str | None, where: list[str]
) -> dict[str, list[InstanceDetails]]:
    """Each study asked for (the patient's, and those `where` matches, too) → its
    instances, by series and number."""
    if where:
        keys = dict(_key_value(item) for item in where)
        matches = archive.find(build_query(Level.STUDY, keys))
        if not matches:
            raise InvalidQuery(f"no study matches {' and '.join(where)}")
        study_uids += [str(match.values["StudyInstanceUID"]) for match in matches]
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


def _report(
    target: Path | None,
    studies: dict[str, list[InstanceDetails]],
    tally: _Tally,
    peer: Peer | None,
) -> None:
    table = Table(title="Export", show_header=False)
    if target is not None:
        table.add_row("zip", str(target))
    if peer is not None:
        over = " over DICOM TLS" if peer.tls else ""
        table.add_row("sent to", f"{peer.name} ({peer.aet} at {peer.host}:{peer.port}){over}")
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
