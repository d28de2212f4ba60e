"""The association loops sleep until there is work, and still keep their timers."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom.sop_class import Verification

from dicom_node import DicomSettings
from dicom_node.node import DicomNode
from dicom_node.transport import ArchiveAssociation
from storage import Archive, PeerRegistry
from tests.conftest import associate


@pytest.fixture
def impatient_node(archive: Archive, peers: PeerRegistry) -> Iterator[DicomNode]:
    settings = DicomSettings(dicom_port=0, network_timeout=1, _env_file=None)
    node = DicomNode(archive, settings, host="127.0.0.1")
    node.start()
    yield node
    node.stop()


def _cpu_ticks(thread: threading.Thread) -> int:
    """User and system CPU time of one of our threads, in clock ticks."""
    fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1]
    utime, stime = fields.split()[11:13]
    return int(utime) + int(stime)


def _server_threads() -> list[threading.Thread]:
    """Each accepted association's thread and its upper layer's."""
    accepted = [t for t in threading.enumerate() if isinstance(t, ArchiveAssociation)]
    return [*accepted, *(t.dul for t in accepted)]


def test_an_idle_association_costs_no_cpu(node: DicomNode) -> None:
    assoc = associate(node.port, Verification)
    assert assoc.is_established
    time.sleep(0.3)
    threads = _server_threads()
    assert len(threads) == 2  # the association's thread and its upper layer's
    before = sum(_cpu_ticks(t) for t in threads)
    time.sleep(2)
    spent = sum(_cpu_ticks(t) for t in threads) - before
    # pynetdicom's own loops wake 2,000 times a second: 5 to 10 ticks in these 2 seconds.
    assert spent <= 3
    assert assoc.send_c_echo().Status == 0  # and it still answers at once
    assoc.release()
    assert assoc.is_released


def test_an_idle_association_is_aborted_at_the_network_timeout(
    impatient_node: DicomNode,
) -> None:
    assoc = associate(impatient_node.port, Verification)
    assert assoc.is_established
    deadline = time.monotonic() + 5
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted
