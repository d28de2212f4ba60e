"""A real HTTP server (uvicorn on 127.0.0.1, a free port) over the test archive."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import uvicorn
from dicomweb_client import DICOMwebClient

from storage import Archive
from tests.auth import ADMIN_HEADERS, SECRET, ensure_user
from tests.conftest import free_port
from viewer_api.app import create_app
from viewer_api.config import ApiSettings


@dataclass
class Web:
    url: str
    archive: Archive

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def client(self, headers: dict[str, str] | None = None) -> DICOMwebClient:
        """A DICOMweb client, as the administrator unless other `headers` are given."""
        return DICOMwebClient(self.dicomweb, headers=headers or ADMIN_HEADERS)


@contextmanager
def serve(archive: Archive, port: int | None = None, **settings: object) -> Iterator[Web]:
    port = port or free_port()
    settings.setdefault("token_secret", SECRET)
    api = ApiSettings(_env_file=None, **settings)  # type: ignore[call-arg]
    ensure_user(archive)
    config = uvicorn.Config(
        create_app(archive, api), host="127.0.0.1", port=port, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield Web(f"http://127.0.0.1:{port}", archive)
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def web(archive: Archive) -> Iterator[Web]:
    with serve(archive) as running:
        yield running
