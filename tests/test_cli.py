"""The pacs command as a user runs it."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage import Archive, Level, StorageSettings, build_query
from tests import factories


def pacs(data_dir: Path, *args: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PACS_DATA_DIR": str(data_dir),
        "PACS_MIN_FREE_MB": "0",
        "COLUMNS": "200",
        **env_vars,
    }
    return subprocess.run(
        [sys.executable, "-m", "pacs", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "cd"
    factories.write_all(factories.ct_series(4), root / "series1")
    factories.write(factories.chest_cr(name="Trần^Văn Minh", patient_id="9"), root / "cr")
    broken = factories.image(rows=32, columns=32)
    broken.PixelData = broken.PixelData[:10]
    factories.write(broken, root / "bad", "short-pixels.dcm")
    (root / "bad" / "readme.txt").write_text("Đĩa CD của bệnh viện\n")
    (root / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    return root


def test_import_stores_a_folder_and_says_what_it_refused(folder: Path, tmp_path: Path) -> None:
    data = tmp_path / "archive"
    result = pacs(data, "import", str(folder), "--hospital", "BVDKLD")
    assert result.returncode == 1  # some files were refused
    assert "│ stored   │ 5 │" in result.stdout
    assert "│ rejected │ 2 │" in result.stdout
    assert "│ skipped  │ 1 │" in result.stdout
    assert "short-pixels.dcm: pixel data has 10 bytes" in result.stdout
    assert "readme.txt: not a DICOM file" in result.stdout
    with Archive.open(StorageSettings(data_dir=data, _env_file=None)) as archive:
        assert archive.stats().instances == 5
        issuers = {
            p.values["IssuerOfPatientID"] for p in archive.find(build_query(Level.PATIENT, {}))
        }
        assert issuers == {"BVDKLD"}


def test_importing_again_finds_everything_already_present(folder: Path, tmp_path: Path) -> None:
    data = tmp_path / "archive"
    pacs(data, "import", str(folder / "series1"))
    result = pacs(data, "import", str(folder / "series1"))
    assert result.returncode == 0
    assert "│ already present │ 4 │" in result.stdout
    assert "│ stored          │ 0 │" in result.stdout


def test_stats(folder: Path, tmp_path: Path) -> None:
    data = tmp_path / "archive"
    pacs(data, "import", str(folder / "series1"), str(folder / "cr"))
    result = pacs(data, "stats")
    assert result.returncode == 0
    for label, value in (("patients", "2"), ("studies", "2"), ("series", "2"), ("instances", "5")):
        assert f"│ {label:<9} │ {value}" in result.stdout


def test_remote_add_list_remove(tmp_path: Path) -> None:
    data = tmp_path / "archive"
    added = pacs(
        data,
        "remote",
        "add",
        "ct-bvdk",
        "--aet",
        "CT_BVDK",
        "--host",
        "10.1.2.3",
        "--port",
        "104",
        "--hospital",
        "BVDKLD",
        "--check-host",
    )
    assert added.returncode == 0, added.stderr
    assert "Added ct-bvdk: CT_BVDK at 10.1.2.3:104" in added.stdout
    listed = pacs(data, "remote", "list")
    assert "ct-bvdk" in listed.stdout
    assert "CT_BVDK" in listed.stdout
    assert "yes" in listed.stdout
    again = pacs(data, "remote", "add", "other", "--aet", "CT_BVDK", "--host", "h", "--port", "1")
    assert again.returncode == 1
    assert "exists" in again.stderr
    assert pacs(data, "remote", "remove", "ct-bvdk").returncode == 0
    assert "ct-bvdk" not in pacs(data, "remote", "list").stdout
    assert pacs(data, "remote", "remove", "ct-bvdk").returncode == 1


@pytest.mark.parametrize("aet", ["", "A" * 17, "BAD\\AET"])
def test_remote_add_refuses_invalid_ae_titles(tmp_path: Path, aet: str) -> None:
    result = pacs(tmp_path, "remote", "add", "x", "--aet", aet, "--host", "h", "--port", "104")
    assert result.returncode == 1
    assert "AE title" in result.stderr


def test_config_lists_every_variable(tmp_path: Path) -> None:
    result = pacs(tmp_path, "config")
    assert result.returncode == 0
    for variable in (
        "PACS_DATA_DIR",
        "PACS_AET",
        "PACS_DICOM_PORT",
        "PACS_HTTP_PORT",
        "PACS_HOST",
        "PACS_DATABASE_URL",
        "PACS_BLOB_URL",
    ):
        assert variable in result.stdout


def test_config_shows_values_as_they_are_not_as_markup(tmp_path: Path) -> None:
    """The terminal's table prints values literally: a folder named like a rich tag is
    not swallowed as one."""
    data = tmp_path / "pacs[bold]data"
    result = pacs(data, "config", COLUMNS="1000")  # the whole path on one line
    assert result.returncode == 0
    assert "pacs[bold]data" in result.stdout


def test_settings_come_from_a_dotenv_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PACS_AET=LAMDONG\nPACS_DICOM_PORT=11999\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACS_")}
    result = subprocess.run(
        [sys.executable, "-m", "pacs", "config"],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert "LAMDONG" in result.stdout
    assert "11999" in result.stdout


def test_verify_reports_a_clean_archive_and_then_a_corrupt_blob(
    folder: Path, tmp_path: Path
) -> None:
    data = tmp_path / "archive"
    pacs(data, "import", str(folder / "series1"))
    clean = pacs(data, "verify")
    assert clean.returncode == 0, clean.stderr
    assert "│ blobs re-read and hashed   │ 4 │" in clean.stdout
    assert "│ corrupt                    │ 0 │" in clean.stdout

    blob = next(p for p in (data / "blobs").rglob("*") if p.is_file() and len(p.name) == 32)
    data_bytes = blob.read_bytes()
    blob.write_bytes(data_bytes[:-1] + bytes([data_bytes[-1] ^ 0xFF]))  # surely another byte
    damaged = pacs(data, "verify")
    assert damaged.returncode == 1
    assert "│ corrupt                    │ 1 │" in damaged.stdout
    assert f"corrupt blob {blob.name}: SOP Instance " in damaged.stdout


def test_migrate_moves_the_archive_and_the_archive_runs_from_its_new_home(
    folder: Path, tmp_path: Path
) -> None:
    data = tmp_path / "archive"
    pacs(data, "import", str(folder / "series1"))
    new_index = f"sqlite:///{tmp_path / 'moved' / 'index.db'}"
    new_blobs = str(tmp_path / "moved" / "blobs")
    (tmp_path / "moved").mkdir()

    moved = pacs(data, "migrate", "--to-database", new_index, "--to-blob", new_blobs)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert re.search(r"rows: instances +│ +4 │ +4 │", moved.stdout)
    assert "Complete" in moved.stdout
    again = pacs(data, "migrate", "--to-database", new_index, "--to-blob", new_blobs)
    assert re.search(r"blobs already there +│ +│ +4 │", again.stdout)

    there = {"PACS_DATABASE_URL": new_index, "PACS_BLOB_URL": new_blobs}
    assert "│ instances │ 4" in pacs(data, "stats", **there).stdout
    assert pacs(data, "verify", **there).returncode == 0
    assert pacs(data, "migrate").returncode == 2  # nowhere to go


def test_verify_repair_removes_an_orphan_blob(folder: Path, tmp_path: Path) -> None:
    data = tmp_path / "archive"
    pacs(data, "import", str(folder / "series1"))
    orphan = data / "blobs" / "ee" / "ee" / ("e" * 32)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"uploaded, never indexed")
    os.utime(orphan, (time.time() - 7200, time.time() - 7200))  # two hours ago

    listed = pacs(data, "verify")
    assert listed.returncode == 1
    assert f"orphan blob {'e' * 32}" in listed.stdout
    repaired = pacs(data, "verify", "--repair")
    assert repaired.returncode == 0, repaired.stdout
    assert re.search(r"orphan blobs removed +│ 1 │", repaired.stdout)
    assert not orphan.exists()
    assert pacs(data, "verify").returncode == 0
