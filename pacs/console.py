"""What every `pacs` command shares: the consoles, the --data-dir option, settings with
logging set up, and opening the archive with a clear error."""

import getpass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from pacs import logging as pacs_logging
from pacs.settings import Settings
from storage import Archive, StorageError

console = Console()
errors = Console(stderr=True)

PROGRESS_COLUMNS = (
    TextColumn("{task.description}"),
    BarColumn(),
    MofNCompleteColumn(),
    TimeElapsedColumn(),
)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Archive folder [env: PACS_DATA_DIR; default ./pacs-data]",
        show_default=False,
    ),
]


def os_user() -> str:
    """Who runs the command, for the audit trail."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no name for this uid (a bare container)
        return "unknown"


def settings_from(**overrides: Any) -> Settings:
    """The settings (environment, .env, then the options given), with logging set up."""
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    pacs_logging.configure(settings.log_level, settings.log_format.value)
    return settings


def open_archive(settings: Settings) -> Archive:
    try:
        return Archive.open(settings)
    except StorageError as exc:
        errors.print(f"[red]Cannot open the archive:[/] {escape(exc.reason)}")
        raise typer.Exit(2) from None
