"""``pacs user``: the built-in user store (add, list, disable, enable, passwd)."""

import getpass
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pacs.certificate_commands import certificate_app
from pacs.console import DataDir, console, errors, open_archive, os_user, settings_from
from storage import InvalidUser

user_app = typer.Typer(help="Users of the built-in store: role, hospital, password.")
user_app.add_typer(certificate_app, name="certificate")

PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from the first line of standard input"
    ),
]


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        errors.print("[red]The two passwords differ[/]")
        raise typer.Exit(2)
    return first


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="Sign-in name: a-z, 0-9 and . _ @ -")],
    role: Annotated[
        str, typer.Option(help="admin, radiologist, technologist, referring or auditor")
    ],
    hospital: Annotated[str | None, typer.Option(help="The user's hospital code")] = None,
    password_stdin: PasswordStdin = False,
    data_dir: DataDir = None,
) -> None:
    """Add a user; the password is asked for twice (or read from standard input)."""
    from storage.users import add_user

    password = _password(password_stdin)
    with open_archive(settings_from(data_dir=data_dir)) as archive:
        try:
            add_user(archive, name, role=role, hospital=hospital, password=password, by=os_user())
        except InvalidUser as exc:
            errors.print(f"[red]Not added:[/] {escape(exc.reason)}")
            raise typer.Exit(2) from None
    console.print(f"Added {escape(name)}: {role}" + (f" of {escape(hospital)}" if hospital else ""))


@user_app.command("list")
def user_list(data_dir: DataDir = None) -> None:
    """Every user: name, role, hospital, whether they may sign in."""
    from storage.users import users

    with open_archive(settings_from(data_dir=data_dir)) as archive:
        found = users(archive)
    table = Table(title="Users")
    for column in ("name", "role", "hospital", "active", "changed (UTC)"):
        table.add_column(column)
    for user in found:
        table.add_row(
            escape(user.name),
            user.role,
            escape(user.hospital or ""),
            "yes" if user.active else "[red]no[/]",
            f"{user.updated_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


def _set_active(name: str, active: bool, data_dir: Path | None) -> None:
    from storage.users import set_active

    with open_archive(settings_from(data_dir=data_dir)) as archive:
        try:
            set_active(archive, name, active, by=os_user())
        except InvalidUser as exc:
            errors.print(f"[red]{escape(exc.reason)}[/]")
            raise typer.Exit(2) from None
    console.print(f"{escape(name)} {'may' if active else 'may no longer'} sign in")


@user_app.command("disable")
def user_disable(name: str, data_dir: DataDir = None) -> None:
    """Stop a user signing in (the account and its history are kept)."""
    _set_active(name, False, data_dir)


@user_app.command("enable")
def user_enable(name: str, data_dir: DataDir = None) -> None:
    """Let a disabled user sign in again."""
    _set_active(name, True, data_dir)


@user_app.command("passwd")
def user_passwd(name: str, password_stdin: PasswordStdin = False, data_dir: DataDir = None) -> None:
    """Set a user's password."""
    from storage.users import set_password

    password = _password(password_stdin)
    with open_archive(settings_from(data_dir=data_dir)) as archive:
        try:
            set_password(archive, name, password, by=os_user())
        except InvalidUser as exc:
            errors.print(f"[red]Not changed:[/] {escape(exc.reason)}")
            raise typer.Exit(2) from None
    console.print(f"Password of {escape(name)} changed")
