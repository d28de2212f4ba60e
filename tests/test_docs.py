"""The README documents what the code does."""

from pathlib import Path
from typing import Any

import typer

from pacs.cli import app
from pacs.settings import Settings

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    missing = [
        f"PACS_{name.upper()}"
        for name in Settings.model_fields
        if f"`PACS_{name.upper()}`" not in README
    ]
    assert missing == []


def _commands(group: Any, prefix: str) -> list[str]:
    found = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group of commands
            found += _commands(command, f"{prefix} {name}")
        else:
            found.append(f"{prefix} {name}")
    return found


def test_every_command_is_in_the_readme() -> None:
    """Every command the CLI has (read from it, so a new one can't be missed)."""
    commands = _commands(typer.main.get_command(app), "pacs")
    assert "pacs model evaluate" in commands
    assert [command for command in commands if f"`{command}" not in README] == []
