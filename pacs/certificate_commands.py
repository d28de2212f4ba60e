"""``pacs user certificate``: radiologists' report-signing certificates (issue from the
archive's own CA, import from another CA, show, revoke, and the CA file verifiers need).

The PIN is typed by the radiologist (asked twice when it is new) or read from the first
line of standard input with ``--pin-stdin``; the archive keeps the key only encrypted
under it.
"""

import getpass
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pacs.console import DataDir, console, errors, open_archive, os_user, settings_from
from pacs.settings import Settings
from storage import Archive, InvalidUser

if TYPE_CHECKING:
    from viewer_api.reports.signing import CheckedCertificate

certificate_app = typer.Typer(
    help="Report-signing certificates (X.509) of radiologists: issue, import, show, revoke."
)

PinStdin = Annotated[
    bool,
    typer.Option("--pin-stdin", help="Read the PIN from the first line of standard input"),
]


@certificate_app.command("issue")
def certificate_issue(
    name: Annotated[str, typer.Argument(help="The radiologist's (or admin's) user name")],
    display_name: Annotated[
        str | None,
        typer.Option(help='The name they sign as (the CN), e.g. "Trần Thị Lan"; default NAME'),
    ] = None,
    days: Annotated[int, typer.Option(min=1, max=3650, help="Days it is valid")] = 730,
    pin_stdin: PinStdin = False,
    data_dir: DataDir = None,
) -> None:
    """Issue a signing certificate from the archive's own CA (made on first use)."""
    from viewer_api.reports.signing import LOCAL_CA_DIR, LocalCa, Trust, check_pkcs12

    settings = settings_from(data_dir=data_dir)
    ca_dir = settings.data_dir / LOCAL_CA_DIR
    configured = settings.report_signing_ca
    if configured is not None and configured.resolve() != (ca_dir / LocalCa.CERTIFICATE).resolve():
        errors.print(
            f"[red]Not issued:[/] PACS_REPORT_SIGNING_CA names another CA "
            f"({escape(str(configured))}); certificates come from that CA: import each with "
            "`pacs user certificate import NAME --p12 FILE`"
        )
        raise typer.Exit(1)
    with open_archive(settings) as archive:
        _signer(archive, name)
        pin = _pin(pin_stdin, new=True)
        now = datetime.now(UTC)
        try:
            ca = LocalCa.open_or_create(ca_dir, now)
            issued = ca.issue(name, display_name or name, pin, days, now)
            checked = check_pkcs12(issued, pin, Trust.load(ca.certificate_path), now)
        except ValueError as exc:
            errors.print(f"[red]Not issued:[/] {escape(str(exc))}")
            raise typer.Exit(1) from None
        _keep(archive, name, checked)
    console.print(f"Issued a signing certificate to {escape(name)}", soft_wrap=True)
    console.print(f"  subject: {escape(checked.subject)}", soft_wrap=True)
    console.print(f"  valid until: {checked.not_after:%Y-%m-%d %H:%M} UTC", soft_wrap=True)
    console.print(
        f"  verifiers need the CA certificate: {escape(str(ca.certificate_path.resolve()))}",
        soft_wrap=True,
    )


@certificate_app.command("import")
def certificate_import(
    name: Annotated[str, typer.Argument(help="The radiologist's (or admin's) user name")],
    p12: Annotated[
        Path,
        typer.Option(
            "--p12",
            exists=True,
            dir_okay=False,
            readable=True,
            help="PKCS#12 file (.p12, .pfx) with the key and certificate, from the CA",
        ),
    ],
    pin_stdin: PinStdin = False,
    data_dir: DataDir = None,
) -> None:
    """Import a signing certificate issued by the CA that PACS_REPORT_SIGNING_CA names."""
    from viewer_api.errors import ApiError
    from viewer_api.reports.signing import check_pkcs12, trust_of

    settings = settings_from(data_dir=data_dir)
    with open_archive(settings) as archive:
        _signer(archive, name)
        pin = _pin(pin_stdin, new=False)
        try:
            checked = check_pkcs12(
                p12.read_bytes(), pin, trust_of(settings, settings.data_dir), datetime.now(UTC)
            )
        except (ApiError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, ApiError) else str(exc)
            errors.print(f"[red]Not imported:[/] {escape(reason)}")
            raise typer.Exit(1) from None
        _keep(archive, name, checked)
    console.print(f"Imported the signing certificate of {escape(name)}", soft_wrap=True)
    console.print(f"  subject: {escape(checked.subject)}", soft_wrap=True)
    console.print(f"  valid until: {checked.not_after:%Y-%m-%d %H:%M} UTC", soft_wrap=True)


@certificate_app.command("show")
def certificate_show(name: str, data_dir: DataDir = None) -> None:
    """The user's signing certificates: the active one and those revoked."""
    from storage.certificates import list_certificates

    with open_archive(settings_from(data_dir=data_dir)) as archive:
        _user(archive, name)
        rows = list_certificates(archive, name)
    if not rows:
        errors.print(f"[red]{escape(name)} has no signing certificate[/]")
        raise typer.Exit(1)
    now = datetime.now(UTC)
    table = Table(title=f"Signing certificates of {escape(name)}")
    for column in ("subject", "issued (UTC)", "valid until (UTC)", "state"):
        table.add_column(column)
    for row in rows:
        if row.revoked_at is not None:
            state = f"[red]revoked {row.revoked_at:%Y-%m-%d}[/]"
        elif row.not_after is not None and row.not_after < now:
            state = "[red]expired[/]"
        else:
            state = "active"
        table.add_row(
            escape(row.subject),
            f"{row.created_at:%Y-%m-%d %H:%M}",
            f"{row.not_after:%Y-%m-%d %H:%M}",
            state,
        )
    console.print(table)


@certificate_app.command("revoke")
def certificate_revoke(name: str, data_dir: DataDir = None) -> None:
    """Revoke the user's signing certificate: they sign no more reports until given one."""
    from storage.certificates import revoke_certificates

    with open_archive(settings_from(data_dir=data_dir)) as archive:
        _user(archive, name)
        revoked = revoke_certificates(archive, name, actor=os_user())
    if revoked:
        console.print(f"Revoked the signing certificate of {escape(name)}")
    else:
        console.print(f"{escape(name)} had no active signing certificate")


@certificate_app.command("ca")
def certificate_ca(data_dir: DataDir = None) -> None:
    """Print the path of the CA certificates (PEM) that verify signed reports."""
    from viewer_api.reports.signing import LOCAL_CA_DIR, LocalCa

    settings: Settings = settings_from(data_dir=data_dir)
    path = settings.report_signing_ca or settings.data_dir / LOCAL_CA_DIR / LocalCa.CERTIFICATE
    if not path.is_file():
        errors.print(
            f"[red]No report-signing CA at {escape(str(path))}[/]: the archive makes its own "
            "with the first `pacs user certificate issue`"
        )
        raise typer.Exit(1)
    typer.echo(path.resolve())


def _pin(from_stdin: bool, *, new: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("PIN: ")
    if new and getpass.getpass("Again: ") != first:
        errors.print("[red]The two PINs differ[/]")
        raise typer.Exit(2)
    return first


def _user(archive: Archive, name: str) -> None:
    from storage.users import account

    if account(archive, name) is None:
        errors.print(f"[red]No user called {escape(name)}[/]")
        raise typer.Exit(1)


def _signer(archive: Archive, name: str) -> None:
    """Exit 1 unless `name` is an active user who may sign reports."""
    from storage.certificates import SIGNING_ROLES
    from storage.users import account

    user = account(archive, name)
    if user is None:
        errors.print(f"[red]No user called {escape(name)}[/]")
        raise typer.Exit(1)
    if user.role not in SIGNING_ROLES:
        errors.print(
            f"[red]{escape(name)} is a {user.role}:[/] only a radiologist or an admin signs reports"
        )
        raise typer.Exit(1)
    if not user.active:
        errors.print(f"[red]{escape(name)} is disabled:[/] enable the user first")
        raise typer.Exit(1)


def _keep(archive: Archive, name: str, checked: "CheckedCertificate") -> None:
    from storage.certificates import add_certificate

    try:
        add_certificate(
            archive,
            name,
            certificate_pem=checked.certificate_pem,
            pkcs12=checked.pkcs12,
            subject=checked.subject,
            not_after=checked.not_after,
            actor=os_user(),
        )
    except InvalidUser as exc:
        errors.print(f"[red]Not kept:[/] {escape(exc.reason)}")
        raise typer.Exit(1) from None
