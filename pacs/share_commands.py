"""``pacs share`` and ``pacs link``: who else may see a study, from the archive's own
machine (as its administrator; the HTTP API does the same for signed-in staff)."""

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pacs.console import DataDir, console, errors, open_archive, os_user, settings_from
from storage import NotFound, StorageError
from storage.access import Actor, create_link, grant, grants_of, revoke_grant, revoke_link
from storage.scope import EVERYTHING

share_app = typer.Typer(help="Share studies with another hospital or a user, until an expiry.")
link_app = typer.Typer(help="Read-only capability links for a doctor outside the system.")

Days = Annotated[
    float | None, typer.Option(help="Days until it expires [default: never]", min=0.001)
]


def _admin() -> Actor:
    return Actor(os_user(), "admin", None, EVERYTHING)


def _until(days: float | None) -> datetime | None:
    return datetime.now(UTC) + timedelta(days=days) if days is not None else None


@share_app.command("add")
def share_add(
    study: Annotated[str, typer.Argument(help="StudyInstanceUID")],
    hospital: Annotated[str | None, typer.Option(help="Share with this hospital")] = None,
    user: Annotated[str | None, typer.Option(help="Or with this user")] = None,
    days: Days = None,
    patient: Annotated[
        bool, typer.Option("--patient", help="Every study of the study's patient")
    ] = False,
    reading: Annotated[
        bool, typer.Option("--reading", help="Assign to the user (a radiologist) to read")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Share a study (or its patient's studies) with a hospital or a user; audited."""
    with open_archive(settings_from(data_dir=data_dir)) as archive:
        try:
            made = grant(
                archive,
                study,
                by=_admin(),
                hospital=hospital,
                user=user,
                purpose="reading" if reading else "share",
                expires_at=_until(days),
                whole_patient=patient,
            )
        except StorageError as exc:
            errors.print(f"[red]Not shared:[/] {escape(exc.reason)}")
            raise typer.Exit(2) from None
    console.print(f"Share {made}: {escape(study)} with {escape(hospital or user or '')}")


@share_app.command("list")
def share_list(
    study: Annotated[str, typer.Argument(help="StudyInstanceUID")], data_dir: DataDir = None
) -> None:
    """A study's shares and reading assignments, newest first."""
    with open_archive(settings_from(data_dir=data_dir)) as archive:
        try:
            found = grants_of(archive, study, scope=EVERYTHING)
        except NotFound as exc:
            errors.print(f"[red]{escape(exc.reason)}[/]")
            raise typer.Exit(2) from None
    table = Table("id", "with", "what", "purpose", "expires", "by", "revoked")
    for row in found:
        table.add_row(
            str(row.id),
            escape(row.hospital or row.user_name or ""),
            "patient" if row.whole_patient else "study",
            row.purpose,
            f"{row.expires_at:%Y-%m-%d %H:%M}" if row.expires_at else "never",
            escape(row.created_by),
            f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "",
        )
    console.print(table)


@share_app.command("revoke")
def share_revoke(
    grant_id: Annotated[int, typer.Argument(help="The share's id")], data_dir: DataDir = None
) -> None:
    """Stop a share now."""
    with open_archive(settings_from(data_dir=data_dir)) as archive:
        try:
            revoke_grant(archive, grant_id, by=_admin())
        except StorageError as exc:
            errors.print(f"[red]Not revoked:[/] {escape(exc.reason)}")
            raise typer.Exit(2) from None
    console.print(f"Share {grant_id} revoked")


@link_app.command("add")
def link_add(
    studies: Annotated[list[str], typer.Argument(help="StudyInstanceUIDs")],
    label: Annotated[str, typer.Option(help="Who it is for (kept in the audit trail)")],
    days: Annotated[float, typer.Option(help="Days until it expires", min=0.001)] = 7,
    data_dir: DataDir = None,
) -> None:
    """A read-only link to the studies; the URL is shown once."""
    settings = settings_from(data_dir=data_dir)
    expires = datetime.now(UTC) + timedelta(days=days)
    with open_archive(settings) as archive:
        try:
            made, token = create_link(
                archive, studies, label=label, expires_at=expires, by=_admin()
            )
        except StorageError as exc:
            errors.print(f"[red]No link made:[/] {escape(exc.reason)}")
            raise typer.Exit(2) from None
    root = settings.public_url or f"http://{settings.http_host}:{settings.http_port}"
    console.print(f"Link {made}, for {escape(label)}, until {expires:%Y-%m-%d %H:%M} UTC:")
    console.print(f"  viewer:   {root.rstrip('/')}/share/{token}", soft_wrap=True)
    console.print(f"  DICOMweb: {root.rstrip('/')}/dicom-web with Authorization: Bearer {token}")
    console.print("Give it only to the doctor it is for; `pacs link revoke` stops it.")


@link_app.command("revoke")
def link_revoke(
    link_id: Annotated[int, typer.Argument(help="The link's id")], data_dir: DataDir = None
) -> None:
    """Stop a link now."""
    with open_archive(settings_from(data_dir=data_dir)) as archive:
        try:
            revoke_link(archive, link_id, by=_admin())
        except StorageError as exc:
            errors.print(f"[red]Not revoked:[/] {escape(exc.reason)}")
            raise typer.Exit(2) from None
    console.print(f"Link {link_id} revoked")
