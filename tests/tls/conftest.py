"""Fixtures of the TLS tests: a throwaway CA with server and client certificates, another
CA's (a stranger's), and the embedded archive (TLS does not care where instances are kept)."""

from pathlib import Path

import pytest

from storage import StorageSettings
from tests.tls.certs import Pki, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Another CA's certificates: what a stranger, or a peer our CA did not sign, presents."""
    return make_pki(tmp_path_factory.mktemp("other-pki"), ca_name="Someone else's CA")


@pytest.fixture
def storage_settings(tmp_path: Path) -> StorageSettings:
    return StorageSettings(data_dir=tmp_path / "archive", min_free_mb=0, _env_file=None)
