"""Modalities that keep sending to a `pacs serve` until it stops answering, each keeping
what the archive acknowledged: C-STORE over several associations, and STOW-RS."""

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pydicom.uid import CTImageStorage

from tests import factories
from tests.auth import ADMIN_HEADERS
from tests.conftest import associate

STOW_BOUNDARY = "dalat-reliability"


def stow_body(paths: Iterable[Path]) -> tuple[bytes, dict[str, str]]:
    """A STOW-RS request body holding `paths` as they are on disk, and its headers."""
    body = bytearray()
    for path in paths:
        body += f"--{STOW_BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        body += path.read_bytes() + b"\r\n"
    body += f"--{STOW_BOUNDARY}--\r\n".encode()
    content_type = f'multipart/related; type="application/dicom"; boundary={STOW_BOUNDARY}'
    return bytes(body), {**ADMIN_HEADERS, "Content-Type": content_type}


def stow_acknowledged(response: httpx.Response) -> set[str]:
    """The SOP Instance UIDs a STOW-RS response says were stored."""
    if response.status_code not in (200, 202):
        return set()
    referenced = response.json().get("00081199", {}).get("Value", [])
    return {item["00081155"]["Value"][0] for item in referenced}


def after_meta(data: bytes) -> bytes:
    """A Part 10 file's dataset bytes after its File Meta Information."""
    group_length = int.from_bytes(data[140:144], "little")  # (0002,0000) UL, value at 140
    return data[144 + group_length :]


@dataclass
class Modalities:
    """`associations` C-STORE senders and one STOW-RS sender, each sending its own series of
    `per_sender` CT slices from `folder`, until the archive stops answering."""

    dicom_port: int
    http_port: int
    folder: Path
    associations: int = 4
    per_sender: int = 200
    stow_batch: int = 5
    acknowledged: dict[str, Path] = field(default_factory=dict)
    """SOP Instance UID: the file sent, for every instance that got success."""
    sent: dict[str, Path] = field(default_factory=dict)
    """Every instance prepared for sending."""
    refused: dict[int, int] = field(default_factory=dict)
    """How many got each failure status (C-STORE status, or HTTP status for STOW-RS)."""
    unavailable_without_retry_after: int = 0
    """STOW-RS 503 answers that did not say when to try again."""
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        for index in range(self.associations + 1):
            series = factories.ct_series(self.per_sender, rows=64, columns=64)
            paths = factories.write_all(series, self.folder / f"sender-{index}")
            self.sent.update((path.stem, path) for path in paths)
            target = self._dimse if index < self.associations else self._stow
            thread = threading.Thread(target=target, args=(paths,), daemon=True)
            self._threads.append(thread)
        for thread in self._threads:
            thread.start()

    def wait_for_traffic(self, timeout: float = 30) -> None:
        """Until the archive acknowledged something."""
        deadline = time.monotonic() + timeout
        while not self.acknowledged:
            assert time.monotonic() < deadline, "nothing acknowledged"
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def join(self, timeout: float = 60) -> None:
        for thread in self._threads:
            thread.join(timeout)
            assert not thread.is_alive(), "a sender hangs after the archive stopped answering"

    def _keep(self, uids: Iterable[str]) -> None:
        with self._lock:
            for uid in uids:
                self.acknowledged[uid] = self.sent[uid]

    def _refused(self, status: int) -> None:
        with self._lock:
            self.refused[status] = self.refused.get(status, 0) + 1

    def _dimse(self, paths: list[Path]) -> None:
        try:
            assoc = associate(self.dicom_port, CTImageStorage, timeout=10)
        except (RuntimeError, OSError):
            return
        try:
            for path in paths:
                if self._stop.is_set():
                    break
                status = assoc.send_c_store(path)
                if status and "Status" in status:
                    if status.Status == 0:
                        self._keep([path.stem])
                    else:
                        self._refused(int(status.Status))
                if not assoc.is_established:
                    return
            assoc.release()
        except (RuntimeError, OSError):
            return
        finally:
            if assoc.is_established:
                assoc.abort()

    def _stow(self, paths: list[Path]) -> None:
        url = f"http://127.0.0.1:{self.http_port}/dicom-web/studies"
        with httpx.Client(timeout=30) as client:
            for start in range(0, len(paths), self.stow_batch):
                if self._stop.is_set():
                    return
                body, headers = stow_body(paths[start : start + self.stow_batch])
                try:
                    response = client.post(url, content=body, headers=headers)
                except httpx.TransportError:
                    return
                if response.status_code not in (200, 202):
                    self._refused(response.status_code)
                if response.status_code == 503 and "Retry-After" not in response.headers:
                    self.unavailable_without_retry_after += 1
                self._keep(stow_acknowledged(response))
