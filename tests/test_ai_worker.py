"""AI jobs through a real broker (Redis and RabbitMQ, both running on this machine) to
`pacs worker` processes: a worker killed mid-job has its job run again by another, and the
study still gets exactly one result."""

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
import redis

from tests.auth import http
from tests.inference.misbehaving import make_bundle
from tests.servers import Server
from tests.test_triage import _send, _sr_series, ai_server, chest_cr, stop

ROOT = Path(__file__).resolve().parent.parent
BROKERS = {
    "redis": "redis://127.0.0.1:6379/0",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/%2F",
}


def _clean_broker(kind: str, queue: str) -> None:
    if kind == "redis":
        client = redis.Redis.from_url(BROKERS[kind])
        for key in client.scan_iter(f"dramatiq:{queue}*"):
            client.delete(key)
        client.close()
    else:
        connection = pika.BlockingConnection(pika.URLParameters(BROKERS[kind]))
        channel = connection.channel()
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            channel.queue_delete(name)
        connection.close()


@pytest.fixture(params=sorted(BROKERS))
def queued(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """`pacs serve` sending jobs to a queue, with a model that takes 8 s per study."""
    models = tmp_path / "models"
    make_bundle(models, "slow", seconds=8)
    queue = f"dalat-test-{uuid.uuid4().hex[:12]}"
    server = ai_server(
        tmp_path,
        PACS_MODELS_DIR=str(models),
        PACS_AI_BROKER=BROKERS[request.param],
        PACS_AI_QUEUE=queue,
        PYTHONPATH=str(ROOT),  # the test bundle's network lives in tests/
    )
    server.start()
    yield server
    stop(server)
    _clean_broker(request.param, queue)


def _worker(server: Server, name: str) -> subprocess.Popen[bytes]:
    log = server.data_dir.parent / f"worker-{name}.log"
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pacs", "worker"],
            env=server.env,
            stdout=out,
            stderr=out,
            start_new_session=True,  # its model processes die with it
        )


def _jobs(server: Server, study: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{server.http_port}/api/ai/jobs"
    return list(http.get(url, params={"study": study}).json())


def _wait_for(server: Server, study: str, state: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = _jobs(server, study)
        if jobs and jobs[0]["state"] == state:
            return jobs[0]
        time.sleep(0.3)
    raise AssertionError(f"no job {state} in {timeout} s: {_jobs(server, study)}")


def test_a_worker_killed_mid_job_leaves_it_to_another_and_one_result(
    queued: Server, tmp_path: Path
) -> None:
    first = _worker(queued, "first")
    second: subprocess.Popen[bytes] | None = None
    try:
        cr = chest_cr("normal-IM-0135-0001.jpeg")
        _send(queued.dicom_port, [cr], tmp_path / "sent")
        _wait_for(queued, cr.StudyInstanceUID, "running", timeout=60)
        os.killpg(first.pid, signal.SIGKILL)  # the machine under it died
        first.wait()
        second = _worker(queued, "second")
        job = _wait_for(queued, cr.StudyInstanceUID, "done", timeout=120)
        assert job["attempts"] == 2
        assert job["flagged"] is True
        assert job["severity"] == "critical"
        time.sleep(3)  # a late second delivery of the message must change nothing
        assert len(_sr_series(queued, cr.StudyInstanceUID, timeout=1)) == 1
        assert len(_jobs(queued, cr.StudyInstanceUID)) == 1
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)


def test_pacs_worker_without_a_broker_says_what_is_missing(tmp_path: Path) -> None:
    env = {**os.environ, "PACS_DATA_DIR": str(tmp_path / "archive")}
    env.pop("PACS_AI_BROKER", None)
    done = subprocess.run(
        [sys.executable, "-m", "pacs", "worker"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "set PACS_AI_BROKER" in done.stderr
    wrong = subprocess.run(
        [sys.executable, "-m", "pacs", "worker", "--broker", "kafka://x"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert wrong.returncode == 2
    assert "must be redis://... or amqp://..." in wrong.stderr
