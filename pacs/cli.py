"""The ``pacs`` command: serve, worker, import, remote, model, jobs, stats, verify, migrate,
config."""

import os
import shutil
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
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
    settings_from,
)
from pacs.export_command import export
from pacs.model_commands import model_app
from pacs.share_commands import link_app, share_app
from pacs.user_commands import user_app
from storage import (
    InvalidInstance,
    Outcome,
    PeerError,
    PeerRegistry,
    Source,
    StorageUnavailable,
    stage_file,
)

app = typer.Typer(help="Dalat PACS: a provincial medical imaging archive.", no_args_is_help=True)
remote_app = typer.Typer(
    help="Known DICOM peers: modalities, other archives, viewers.", no_args_is_help=True
)
app.add_typer(remote_app, name="remote")
app.add_typer(model_app, name="model")
app.add_typer(user_app, name="user")
app.add_typer(share_app, name="share")
app.add_typer(link_app, name="link")
app.command("export")(export)
_MAX_LISTED = 50


@app.command()
def serve(
    data_dir: DataDir = None,
    aet: Annotated[str | None, typer.Option(help="Our AE title [env: PACS_AET; DALAT]")] = None,
    dicom_port: Annotated[
        int | None, typer.Option(help="DICOM port [env: PACS_DICOM_PORT; 11112]")
    ] = None,
    http_port: Annotated[
        int | None, typer.Option(help="HTTP port [env: PACS_HTTP_PORT; 8000]")
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="DICOM bind address [env: PACS_HOST; 127.0.0.1]")
    ] = None,
) -> None:
    """Run the archive: DICOM listeners and HTTP API, until Ctrl-C or SIGTERM."""
    settings = settings_from(
        data_dir=data_dir, aet=aet, dicom_port=dicom_port, http_port=http_port, host=host
    )
    _metrics_across_processes(settings.data_dir / ".metrics")
    from dicom_node.tls import TlsSettingsError
    from pacs.serve import UnsafeSettings
    from pacs.serve import serve as run

    try:
        run(settings)
    except (UnsafeSettings, TlsSettingsError) as exc:
        errors.print(f"[red]Refusing to start:[/] {exc}")
        raise typer.Exit(2) from None
    except StorageUnavailable as exc:
        errors.print(f"[red]Cannot open the archive:[/] {exc}")
        raise typer.Exit(2) from None


@app.command()
def worker(
    data_dir: DataDir = None,
    broker: Annotated[
        str | None,
        typer.Option(help="redis://... or amqp://... [env: PACS_AI_BROKER]"),
    ] = None,
) -> None:
    """Run AI jobs from the queue (PACS_AI_BROKER) until Ctrl-C or SIGTERM: a worker on
    another machine (a GPU one), reaching the same index and blob store as the archive."""
    import signal
    import threading

    from inference.errors import QueueError
    from inference.queue import run_worker

    settings = settings_from(data_dir=data_dir, ai_broker=broker)
    if not settings.ai_broker:
        errors.print("[red]No queue:[/] set PACS_AI_BROKER or --broker (redis:// or amqp://)")
        raise typer.Exit(2)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with open_archive(settings) as archive:
            run_worker(archive, settings, stop)
    except QueueError as exc:
        errors.print(f"[red]Cannot run:[/] {exc}")
        raise typer.Exit(2) from None
    except StorageUnavailable as exc:
        errors.print(f"[red]Cannot open the archive:[/] {exc}")
        raise typer.Exit(2) from None


def _metrics_across_processes(folder: Path) -> None:
    """Prometheus counters shared by the listener processes (set before it is imported)."""
    shutil.rmtree(folder, ignore_errors=True)  # counters start again with the server
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def _files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for root, _dirs, names in os.walk(path):
                for name in sorted(names):
                    yield Path(root) / name
        else:
            yield path


@app.command("import")
def import_(
    paths: Annotated[
        list[Path], typer.Argument(help="DICOM files and folders (recursive)", exists=True)
    ],
    data_dir: DataDir = None,
    hospital: Annotated[
        str | None,
        typer.Option(help="Hospital code of these files (default Issuer of Patient ID)"),
    ] = None,
    jobs: Annotated[int, typer.Option(min=1, max=32, help="Files stored in parallel")] = 4,
) -> None:
    """Store DICOM files into the archive, with a summary of what was stored and refused."""
    settings = settings_from(data_dir=data_dir)
    files = list(_files(paths))
    source = Source(kind="import", aet=None, hospital=hospital)
    outcomes: Counter[str] = Counter()
    rejected: list[tuple[Path, str]] = []
    with open_archive(settings) as archive:

        def store(path: Path) -> tuple[Path, str, str | None]:
            if path.name.upper() == "DICOMDIR":
                return path, "skipped", "a DICOMDIR index, not an instance"
            try:
                result = archive.store(stage_file(path, archive.staging_dir), source=source)
            except (InvalidInstance, StorageUnavailable) as exc:
                return path, "rejected", exc.reason
            except OSError as exc:
                return path, "rejected", f"cannot read: {exc.strerror or exc}"
            return path, result.outcome.value, None

        with Progress(*PROGRESS_COLUMNS, console=errors, transient=False) as progress:
            task = progress.add_task("Importing", total=len(files))
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                for path, outcome, reason in pool.map(store, files):
                    outcomes[outcome] += 1
                    if reason is not None and outcome == "rejected":
                        rejected.append((path, reason))
                    progress.advance(task)

    table = Table(title="Import", show_header=False)
    for label, key in (
        ("stored", Outcome.STORED.value),
        ("already present", Outcome.ALREADY_PRESENT.value),
        ("kept first copy (different bytes)", Outcome.KEPT_FIRST.value),
        ("replaced (different bytes)", Outcome.OVERWRITTEN.value),
        ("skipped", "skipped"),
        ("rejected", "rejected"),
    ):
        if outcomes[key] or key in (Outcome.STORED.value, "rejected"):
            table.add_row(label, str(outcomes[key]))
    console.print(table)
    for path, reason in rejected:
        # Both come from outside: a file name or a UID may hold "[/red]" (rich markup).
        console.print(f"[red]rejected[/] {escape(str(path))}: {escape(reason)}")
    if rejected:
        raise typer.Exit(1)


@remote_app.command("add")
def remote_add(
    name: Annotated[str, typer.Argument(help="A name for the peer")],
    aet: Annotated[str, typer.Option(help="Its AE title")],
    host: Annotated[str, typer.Option(help="Its host name or address")],
    port: Annotated[int, typer.Option(help="Its DICOM port")],
    hospital: Annotated[str | None, typer.Option(help="Code of the hospital it belongs to")] = None,
    check_host: Annotated[
        bool, typer.Option(help="Accept its AE title only from HOST's address")
    ] = False,
    tls: Annotated[
        bool,
        typer.Option(
            "--tls",
            help="Open our associations to it (C-MOVE, commitment reports, exports) over DICOM "
            "TLS, its certificate checked against PACS_TLS_CA_CERTIFICATES and HOST; PORT is "
            "then its TLS port",
        ),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Register a DICOM peer (it may then associate, and receive C-MOVEs)."""
    with open_archive(settings_from(data_dir=data_dir)) as archive:
        try:
            peer = PeerRegistry(archive.engine).add(
                name=name,
                aet=aet,
                host=host,
                port=port,
                hospital=hospital,
                check_host=check_host,
                tls=tls,
            )
        except PeerError as exc:
            errors.print(f"[red]Cannot add {escape(name)}:[/] {escape(str(exc))}")
            raise typer.Exit(1) from None
    over = " (DICOM TLS)" if peer.tls else ""
    console.print(f"Added {peer.name}: {peer.aet} at {peer.host}:{peer.port}{over}")


@remote_app.command("list")
def remote_list(data_dir: DataDir = None) -> None:
    """List the registered DICOM peers."""
    with open_archive(settings_from(data_dir=data_dir)) as archive:
        peers = PeerRegistry(archive.engine).list()
    table = Table("name", "AE title", "host", "port", "hospital", "host checked", "TLS")
    for peer in peers:
        table.add_row(
            escape(peer.name),
            escape(peer.aet),
            peer.host,
            str(peer.port),
            peer.hospital or "",
            "yes" if peer.check_host else "no",
            "yes" if peer.tls else "no",
        )
    console.print(table)


@remote_app.command("remove")
def remote_remove(name: str, data_dir: DataDir = None) -> None:
    """Forget a DICOM peer."""
    with open_archive(settings_from(data_dir=data_dir)) as archive:
        removed = PeerRegistry(archive.engine).remove(name)
    if not removed:
        errors.print(f"[red]No peer named {escape(repr(name))}[/]")
        raise typer.Exit(1)
    console.print(f"Removed {name}")


@app.command()
def jobs(
    data_dir: DataDir = None,
    limit: Annotated[int, typer.Option(min=1, help="How many of the newest jobs")] = 30,
    study: Annotated[str | None, typer.Option(help="Only this study's jobs")] = None,
    state: Annotated[
        str | None, typer.Option(help="Only jobs in this state: queued, running, done, ...")
    ] = None,
) -> None:
    """AI triage jobs: study, model, state (queued, running, done, failed, skipped), score,
    flag and reason, newest first."""
    from storage.ai_jobs import list_jobs

    with open_archive(settings_from(data_dir=data_dir)) as archive:
        rows = list_jobs(archive, study=study, state=state, limit=limit)
    table = Table(title="AI triage jobs")
    for column in ("id", "study", "hospital", "model", "state", "score", "flag", "reason"):
        table.add_column(column)
    for row in rows:
        flag = {True: f"[red]FLAGGED {row['severity'] or ''}[/]", False: "-", None: ""}
        table.add_row(
            str(row["id"]),
            row["study_instance_uid"],
            row["hospital"] or "",
            f"{row['model']} {row['model_version']}",
            row["state"],
            "" if row["score"] is None else f"{row['score']:.4f}",
            flag[row["flagged"]],
            escape(row["reason"] or row["finding"] or ""),
        )
    console.print(table)


@app.command()
def stats(data_dir: DataDir = None) -> None:
    """Counts of patients, studies, series, instances and bytes."""
    with open_archive(settings_from(data_dir=data_dir)) as archive:
        figures = archive.stats()
    table = Table(show_header=False, title="Archive")
    table.add_row("patients", f"{figures.patients:,}")
    table.add_row("studies", f"{figures.studies:,}")
    table.add_row("series", f"{figures.series:,}")
    table.add_row("instances", f"{figures.instances:,}")
    table.add_row("bytes", f"{figures.bytes:,} ({figures.bytes / 2**30:.2f} GiB)")
    console.print(table)


@app.command("backfill-citizen-ids")
def backfill_citizen_ids(data_dir: DataDir = None) -> None:
    """Read the citizen identity number (CCCD) of patient records that have none, from their
    stored headers (records stored before the archive read it, or under other settings)."""
    from sqlalchemy import func, select

    from storage.index.tables import Patient
    from storage.priors import backfill_citizen_ids as backfill

    with open_archive(settings_from(data_dir=data_dir)) as archive:
        with archive.read() as conn:
            total = conn.scalar(
                select(func.count()).select_from(Patient).where(Patient.citizen_id.is_(None))
            )
        with Progress(*PROGRESS_COLUMNS, console=errors) as progress:
            task = progress.add_task("Reading stored headers", total=total)
            read, found = backfill(archive, lambda n: progress.advance(task, n))
    console.print(f"Records without a CCCD: {read} read, {found} given one from their headers")


@app.command()
def verify(
    data_dir: DataDir = None,
    sample: Annotated[
        float,
        typer.Option(min=0.0001, max=1.0, help="Fraction of the blobs to re-read (1: all)"),
    ] = 1.0,
    orphans: Annotated[
        bool, typer.Option(help="Also list blobs that no index row points at")
    ] = True,
    repair: Annotated[
        bool,
        typer.Option(help="Delete orphan blobs older than --grace-minutes (left by crashes)"),
    ] = False,
    grace_minutes: Annotated[
        int, typer.Option(min=1, help="Orphans younger than this are left alone")
    ] = 60,
) -> None:
    """Re-read blobs against the SHA-256 recorded at arrival; list missing and corrupt ones."""
    from storage.verify import Problem
    from storage.verify import verify as verify_archive

    settings = settings_from(data_dir=data_dir)
    with open_archive(settings) as archive:
        total = archive.stats().instances
        with Progress(*PROGRESS_COLUMNS, console=errors) as progress:
            task = progress.add_task("Verifying", total=total)
            report = verify_archive(
                archive,
                sample=sample,
                orphans=orphans or repair,
                remove_orphans_older_than=timedelta(minutes=grace_minutes) if repair else None,
                progress=lambda n: progress.advance(task, n),
            )
    table = Table(title="Verify", show_header=False)
    table.add_row("instances in the index", str(report.instances))
    table.add_row("blobs re-read and hashed", str(report.checked))
    table.add_row("missing", str(report.count(Problem.MISSING)))
    table.add_row("corrupt", str(report.count(Problem.CORRUPT)))
    if orphans or repair:
        table.add_row("orphan blobs (not indexed)", str(report.count(Problem.ORPHAN)))
    removed = sum(1 for finding in report.findings if finding.removed)
    if repair:
        table.add_row("orphan blobs removed", str(removed))
    console.print(table)
    for finding in report.findings[:_MAX_LISTED]:
        what = finding.instance
        detail = (
            f"SOP Instance {what.sop_instance_uid} of study {what.study_instance_uid}"
            if what is not None
            else "no instance (a blob being stored just now also shows here)"
        )
        if finding.removed:
            detail = "removed"
        console.print(
            f"[red]{finding.problem.value}[/] blob {escape(finding.blob_key)}: {escape(detail)}"
        )
    if len(report.findings) > _MAX_LISTED:
        console.print(f"... and {len(report.findings) - _MAX_LISTED} more")
    if len(report.findings) > removed:
        raise typer.Exit(1)


@app.command()
def migrate(
    data_dir: DataDir = None,
    to_database: Annotated[
        str | None,
        typer.Option("--to-database", help="SQLAlchemy URL of the new index database"),
    ] = None,
    to_blob: Annotated[
        str | None, typer.Option("--to-blob", help="The new blob store: a folder or s3://...")
    ] = None,
) -> None:
    """Move the archive to another index database and/or blob store; run again to resume."""
    from storage.relocation import relocate

    settings = settings_from(data_dir=data_dir)
    target_settings = settings.model_copy(
        update={
            "database_url": to_database or settings.database_url,
            "blob_url": to_blob or settings.blob_url,
            "s3_spool_mb": 0,  # each blob confirmed by S3 before its rows are copied
        }
    )
    same_index = target_settings.resolved_database_url == settings.resolved_database_url
    same_blobs = target_settings.resolved_blob_url == settings.resolved_blob_url
    if same_index and same_blobs:
        errors.print("[red]Nothing to move:[/] give --to-database and/or --to-blob")
        raise typer.Exit(2)
    with open_archive(settings) as source, open_archive(target_settings) as target:
        total = source.stats().instances
        with Progress(*PROGRESS_COLUMNS, console=errors) as progress:
            task = progress.add_task("Moving", total=total)
            report = relocate(source, target, progress=lambda n: progress.advance(task, n))
    table = Table(title="Migrate")
    table.add_column("")
    table.add_column("source", justify="right")
    table.add_column("target", justify="right")
    table.add_row("blobs copied now", "", str(report.blobs_copied))
    table.add_row("blobs already there", "", str(report.blobs_present))
    for name, (before, after) in report.counts.items():
        table.add_row(f"rows: {name}", str(before), str(after))
    console.print(table)
    for instance, reason in report.unreadable:
        console.print(
            f"[red]left behind[/] SOP Instance {escape(instance.sop_instance_uid)}: "
            f"{escape(reason)}"
        )
    if not report.complete:
        raise typer.Exit(1)
    console.print(
        "Complete: every blob copied matched its SHA-256 and the row counts agree. Set "
        "PACS_DATABASE_URL and PACS_BLOB_URL to the new values, restart `pacs serve`, and "
        "`pacs verify` re-reads everything in its new home."
    )


@app.command()
def config() -> None:
    """Show every setting, its value and where to set it."""
    settings = settings_from()
    table = Table("variable", "value", "meaning")
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        table.add_row(
            f"PACS_{name.upper()}",
            escape(str(getattr(value, "value", value))),
            escape(field.description or ""),
        )
    console.print(table)
