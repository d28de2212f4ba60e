"""A critical flag is announced to the webhook, tried again until the receiver takes it,
never twice once taken, and given up after the configured attempts."""

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from inference.jobs import claim_next, finish, queue_quiet_studies
from inference.webhook import Webhook
from storage import Archive
from storage.ai_jobs import list_jobs
from tests.inference.test_jobs import _store

MODEL, VERSION = "blast-ct", "1.0.0"


class Receiver(ThreadingHTTPServer):
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(json.loads(body))
        status = 500 if len(self.server.received) <= self.server.failures else 204
        self.send_response(status)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    server = Receiver(failures=getattr(request, "param", 2))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _flag(archive: Archive, tmp_path: Path, severity: str = "critical") -> str:
    study = _store(archive, tmp_path, hospital="BVDKLD")
    queue_quiet_studies(archive, MODEL, VERSION, timedelta(0))
    job = claim_next(archive, [MODEL], "node:1")
    assert job is not None
    finish(
        archive,
        job,
        "done",
        flagged=True,
        severity=severity,
        score=12.5,
        threshold=1.0,
        finding="intracranial haemorrhage",
        hospital="BVDKLD",
    )
    return study


def _deliver(webhook: Webhook, rounds: int) -> None:
    for _ in range(rounds):
        webhook.deliver_due()
        time.sleep(0.06)


def test_a_critical_flag_is_retried_until_the_receiver_takes_it_and_sent_once(
    archive: Archive, tmp_path: Path, receiver: Receiver
) -> None:
    study = _flag(archive, tmp_path)
    webhook = Webhook(archive, receiver.url, severities=["critical"], attempts=8, first_pause=0.01)
    _deliver(webhook, 20)
    assert len(receiver.received) == 3  # two refusals, then taken; never again after
    notice = receiver.received[-1]
    assert notice["study_instance_uid"] == study
    assert notice["finding"] == "intracranial haemorrhage"
    assert notice["severity"] == "critical"
    assert notice["hospital"] == "BVDKLD"
    assert "PatientName" not in json.dumps(notice)
    (job,) = list_jobs(archive, study=study)
    assert job["state"] == "done"
    webhook = Webhook(archive, receiver.url, severities=["critical"], attempts=8)
    _deliver(webhook, 2)  # a restarted archive does not announce it again
    assert len(receiver.received) == 3
    webhook.close()


@pytest.mark.parametrize("receiver", [100], indirect=True)
def test_a_flag_is_given_up_after_the_attempts(
    archive: Archive, tmp_path: Path, receiver: Receiver
) -> None:
    _flag(archive, tmp_path)
    webhook = Webhook(archive, receiver.url, severities=["critical"], attempts=3, first_pause=0.01)
    _deliver(webhook, 20)
    assert len(receiver.received) == 3
    webhook.close()


def test_an_urgent_flag_is_not_announced_when_only_critical_ones_are(
    archive: Archive, tmp_path: Path, receiver: Receiver
) -> None:
    _flag(archive, tmp_path, severity="urgent")
    webhook = Webhook(archive, receiver.url, severities=["critical"], attempts=3)
    _deliver(webhook, 2)
    assert receiver.received == []
    webhook.close()


@pytest.mark.parametrize("receiver", [0], indirect=True)
def test_several_nodes_announce_a_flag_once(
    archive: Archive, tmp_path: Path, receiver: Receiver
) -> None:
    _flag(archive, tmp_path)
    nodes = [Webhook(archive, receiver.url, severities=["critical"], attempts=8) for _ in range(3)]
    threads = [threading.Thread(target=_deliver, args=(node, 5)) for node in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(receiver.received) == 1
    for node in nodes:
        node.close()
