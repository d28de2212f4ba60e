"""The README documents what the code does."""

from pathlib import Path

from pacs.settings import Settings

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    missing = [
        f"PACS_{name.upper()}"
        for name in Settings.model_fields
        if f"`PACS_{name.upper()}`" not in README
    ]
    assert missing == []


def test_every_command_is_in_the_readme() -> None:
    for command in (
        "pacs serve",
        "pacs import",
        "pacs remote add",
        "pacs remote list",
        "pacs remote remove",
        "pacs stats",
        "pacs verify",
        "pacs migrate",
        "pacs model list",
        "pacs jobs",
        "pacs config",
    ):
        assert command in README
