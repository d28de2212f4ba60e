"""The reliability suite: crashes, outages, load and hostile input against `pacs serve`.

CI runs a reduced form (a few kills, a short load, a sample of the hostile corpus). The
full run, whose figures docs/reliability.md reports, is::

    PACS_RELIABILITY=full .venv/bin/pytest tests/reliability -n 0

Each test records what it measured with the ``figures`` fixture; the figures of a run are
printed at its end, and kept as JSON lines in ``$PACS_RELIABILITY_FIGURES`` when that is
set.
"""

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

FULL = os.environ.get("PACS_RELIABILITY", "").lower() == "full"
"""The full run (``PACS_RELIABILITY=full``); otherwise the reduced one CI runs."""

_FIGURES = "PACS_RELIABILITY_FIGURES"

ONE_AT_A_TIME = pytest.mark.xdist_group("under-fire")
"""The suite's tests run one after another, on one pytest-xdist worker (``--dist loadgroup``):
two at once on a two-core machine (20 modalities beside a crash loop) measure the machine,
not the archive; CI once saw a single C-STORE outlast a modality's 30 s that way."""


def sized(reduced: int, full: int) -> int:
    """How many (kills, seconds, files...) a check does: few in CI, many in the full run."""
    return full if FULL else reduced


class Figures:
    """What one test measured, appended to the run's figures file as it goes."""

    def __init__(self, path: Path, test: str) -> None:
        self.path = path
        self.test = test

    def record(self, name: str, value: float | int | str, unit: str = "") -> None:
        line = json.dumps(
            {"test": self.test, "name": name, "value": value, "unit": unit, "full": FULL},
            ensure_ascii=False,
        )
        with self.path.open("a", encoding="utf-8") as out:  # one write: atomic with O_APPEND
            out.write(line + "\n")


_temporary = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return  # an xdist worker: the controller chose the file, in the environment
    if _FIGURES in os.environ:
        Path(os.environ[_FIGURES]).write_text("")  # this run's figures only
    else:  # made by the first figure recorded, removed once printed
        name = f"pacs-reliability-{os.getpid()}.jsonl"
        os.environ[_FIGURES] = str(Path(tempfile.gettempdir()) / name)
        config.stash[_temporary] = True


def figures_of(test: str) -> Figures:
    return Figures(Path(os.environ[_FIGURES]), test)


def read_figures(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or _FIGURES not in os.environ:
        return
    path = Path(os.environ[_FIGURES])
    rows = read_figures(path) if path.exists() else []
    if config.stash.get(_temporary, False):
        path.unlink(missing_ok=True)
    if not rows:
        return
    mode = "full" if FULL else "reduced (CI)"
    terminalreporter.section(f"reliability figures, {mode} run")
    test = None
    for row in rows:
        if row["test"] != test:
            test = row["test"]
            terminalreporter.write_line(test)
        value = row["value"]
        if isinstance(value, float):
            shown = f"{value:,.3g}"
        else:
            shown = f"{value:,}" if isinstance(value, int) else str(value)
        terminalreporter.write_line(f"    {row['name']:<56} {shown} {row['unit']}".rstrip())
