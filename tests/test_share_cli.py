"""`pacs share` and `pacs link` as an administrator uses them on the archive's machine: a
share that another hospital's user then sees over HTTP, a link whose URL opens the study
and stops working once revoked; each audited."""

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from storage import Archive, Source, StorageSettings, stage_file
from tests import factories
from tests.auth import ensure_user
from tests.conftest import audit_row, run_pacs
from tests.viewer_api.conftest import serve

PUBLIC = "https://pacs.lamdong.example"


def _pacs(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_pacs(*args, data_dir=data_dir, env={"PACS_PUBLIC_URL": PUBLIC})


@pytest.mark.parametrize("storage_settings", ["embedded"], indirect=True)
def test_share_and_link_from_the_command_line(
    archive: Archive, storage_settings: StorageSettings, tmp_path: Path
) -> None:
    ds = factories.image(patient_id="PA")
    path = factories.write(ds, tmp_path / "a")
    source = Source("dimse", aet="CT", hospital="BV-DALAT")
    archive.store(stage_file(path, archive.staging_dir), source=source)
    study = str(ds.StudyInstanceUID)
    other = ensure_user(archive, "ref-b", "referring", "BV-BAOLOC")
    data_dir = storage_settings.data_dir

    shared = _pacs(data_dir, "share", "add", study, "--hospital", "BV-BAOLOC", "--days", "2")
    assert shared.returncode == 0, shared.stderr
    listed = _pacs(data_dir, "share", "list", study)
    assert "BV-BAOLOC" in listed.stdout
    made = _pacs(data_dir, "link", "add", study, "--label", "Dr Lê, BV Chợ Rẫy", "--days", "1")
    assert made.returncode == 0, made.stderr
    url = re.search(r"https://pacs\.lamdong\.example/share/(\S+)", made.stdout)
    assert url is not None, made.stdout
    token = url.group(1)
    missing = _pacs(data_dir, "share", "add", "1.2.3.4", "--hospital", "X")
    assert missing.returncode == 2
    assert "no study 1.2.3.4" in missing.stderr

    with serve(archive) as web:
        found = httpx.get(f"{web.dicomweb}/studies", headers=other).json()
        assert [s["0020000D"]["Value"][0] for s in found] == [study]
        holder = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{web.dicomweb}/studies", headers=holder).status_code == 200
        link_id = re.search(r"Link (\d+)", made.stdout).group(1)  # type: ignore[union-attr]
        assert _pacs(data_dir, "link", "revoke", link_id).returncode == 0
        assert httpx.get(f"{web.dicomweb}/studies", headers=holder).status_code == 401
        share_id = re.search(r"Share (\d+)", shared.stdout).group(1)  # type: ignore[union-attr]
        assert _pacs(data_dir, "share", "revoke", share_id).returncode == 0
        assert httpx.get(f"{web.dicomweb}/studies", headers=other).json() == []
    row = audit_row(archive, action="share", study_instance_uid=study)
    assert row.actor
