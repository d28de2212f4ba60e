"""Load (issue 9, part 3; P1 and P4 of the reliability notes, scaled to one machine): one
`pacs serve` on 127.0.0.1 taking studies from 20 modalities at once while 20 radiologists
read through DICOMweb, for a fixed time (CI: 20 s; full run: 120 s).

- 10 modalities run DCMTK's ``storescu`` (one association per study, again and again) and
  10 run pynetdicom (one association per study, each C-STORE timed), each its own process
  and its own AE title, registered as a peer of hospital BVDKLD and accepted from its
  address only. The studies are small CT series (3-8 slices of 128x128) and chest CRs
  (1-2 images of 256x256) made by tests/factories.py, with fresh UIDs each time.
- 20 viewers, each its own process and its own radiologist account, make the requests
  OHIF makes to open a study (study list, series list, the viewer's checks and priors,
  each series' metadata, every frame; now and then a thumbnail, a rendered image or, as
  Weasis does, the whole series), study after study, without pause.
  The clients are tests/reliability/load_clients.py.

The configured limits stay at their defaults; the test sets up what a real deployment has
instead of raising them:

- ``PACS_MAX_ASSOCIATIONS`` (64 per listener process) is above the 20 modalities.
- ``PACS_MAX_CONNECTIONS_PER_ADDRESS`` (16 per listener process) caps the connections from
  one IP address; real modalities have an address each. The pynetdicom modalities send
  from addresses of their own (127.0.0.11 to 127.0.0.20); the storescu ones, which cannot
  choose theirs, share 127.0.0.1 (10 connections at most at once).
- ``PACS_RATE_LIMIT`` (3000 requests a minute) counts per user: the 20 viewers are 20
  radiologists signed in as themselves, as in a reading room, not one shared admin token
  (a shared token would be one user making 20 people's requests, and rightly limited).

An association refused by a configured limit on purpose (A-ASSOCIATE-RJ "local limit
exceeded") is counted apart; everything else must succeed: no association rejected or
aborted, no C-STORE status but success, no HTTP status but 200 (or 204, an empty search),
no transport error. The modalities give up on an answer after 30 s, as real ones are often
set to (a C-STORE answered later is a failed send for them, and the association aborted):
at scale, before the index writer inserted the API's audit rows together, the stores that
waited behind those rows took up to 50 s.

Afterwards every acknowledged instance is in the index, each study's instance count
through QIDO-RS is what was acknowledged for it, and the server answers C-ECHO and /health
with the same listener processes it started with.

The figures (associations, instances and MB stored per second, HTTP requests per second,
p50/p95/p99 latency of each request kind and of C-STORE, peak RSS of the server and its
listener processes) go to the run's figures, never into assertions. The clients run on the
same machine as the server: on CI's 2 cores they share the CPU (the figures say how much
CPU time each side used), so the figures are a floor, not the server's capacity.

CI runs the reduced form (embedded only); the full one (both backends, 120 s each) is::

    PACS_RELIABILITY=full .venv/bin/pytest tests/reliability/test_load.py -n 0
"""

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pynetdicom.sop_class import Verification

from storage import Archive, PeerRegistry, StorageSettings
from tests import factories
from tests.auth import ADMIN_HEADERS, ensure_user
from tests.conftest import SCU_AET, associate, free_port, need
from tests.reliability.figures import FULL, ONE_AT_A_TIME, Figures, sized
from tests.servers import Server, send
from viewer_api.config import ApiSettings

pytestmark = ONE_AT_A_TIME

SECONDS = sized(20, 120)
"""How long the load lasts."""
STORESCU = 10
PYNETDICOM = 10
VIEWERS = 20
HOSPITAL = "BVDKLD"
OK_HTTP = (200, 204)
RATE_LIMIT = ApiSettings.model_fields["rate_limit"].default
"""PACS_RATE_LIMIT, as the server runs with it (the default)."""


@dataclass
class Backend:
    server: Server
    check: StorageSettings
    """How the test opens the archive itself (its index and blobs)."""


@pytest.fixture(
    params=[
        pytest.param("embedded", id="sqlite+folder"),
        pytest.param(
            "scale",
            id="postgresql+s3",
            marks=[
                pytest.mark.postgres,
                pytest.mark.s3,
                pytest.mark.skipif(not FULL, reason="full run only (PACS_RELIABILITY=full)"),
            ],
        ),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    settings: dict[str, str] = {}
    check = StorageSettings(data_dir=tmp_path / "archive", min_free_mb=0, _env_file=None)
    if request.param == "scale":
        database_url = request.getfixturevalue("postgres_url")
        blob_url = request.getfixturevalue("s3_url")
        settings = {"PACS_DATABASE_URL": database_url, "PACS_BLOB_URL": blob_url}
        check = StorageSettings(
            data_dir=tmp_path / "check",
            database_url=database_url,
            blob_url=blob_url,
            min_free_mb=0,
            _env_file=None,
        )
    server = Server(tmp_path / "archive", free_port(), free_port(), settings=settings)
    yield Backend(server, check)
    if server.process is not None and server.process.poll() is None:
        server.stop()


@pytest.mark.timeout(SECONDS + 300)
def test_20_modalities_and_20_viewers_at_once(
    backend: Backend, tmp_path: Path, figures: Figures
) -> None:
    server = backend.server
    folder = tmp_path / "clients"
    folder.mkdir()
    modalities = modality_configs(server.dicom_port, tmp_path / "studies")
    viewers = [
        {
            "role": "viewer",
            "name": f"viewer{index + 1:02d}",
            "base": f"http://127.0.0.1:{server.http_port}/dicom-web",
            "headers": headers,
            "seed": index,
        }
        for index, headers in enumerate(register(backend.check, modalities))
    ]
    clients: list[Client] = []
    try:
        server.start()
        listeners = sorted(server.children())
        acknowledged = preload(server, tmp_path / "preload")  # the viewers' first list
        clients = start_clients([*modalities, *viewers], folder)
        cpu_before = cpu_seconds(server)
        started = time.monotonic()
        for client in clients:  # the start, for all at once
            assert client.process.stdin is not None
            client.process.stdin.write("go\n")
            client.process.stdin.close()
        for client in clients:
            client.process.wait(timeout=SECONDS + 120)
        duration = time.monotonic() - started
        server_cpu = cpu_seconds(server) - cpu_before
        peak_kib, peaks_sum_kib = server.peak_rss_kib(), sum_of_peaks(server)

        load = Load.of(clients)
        acknowledged |= load.acknowledged
        alive = answers(server)
        listeners_after = sorted(server.children())
        counted = qido_counts(server, {study for _, study, _ in acknowledged.values()})
    finally:
        for client in clients:
            if client.process.poll() is None:
                client.process.kill()
                client.process.wait()
            for pipe in (client.process.stdin, client.process.stdout):
                if pipe is not None:
                    pipe.close()
    with Archive.open(backend.check) as archive:
        indexed = {instance.sop_instance_uid for instance in archive.iter_instances()}

    load.record(figures, duration)
    missing = set(acknowledged) - indexed
    found = len(set(load.acknowledged) & indexed)
    figures.record("acknowledged instances found in the index", found)
    figures.record("peak RSS, largest process (server or a listener)", peak_kib // 1024, "MiB")
    figures.record(
        "peak RSS, each process of the service (with pixel workers) added",
        peaks_sum_kib // 1024,
        "MiB",
    )
    figures.record("CPU cores of the machine", len(os.sched_getaffinity(0)))
    figures.record("CPU time used by the service during the load", round(server_cpu), "s")
    figures.record(
        "CPU time used by the clients during the load (storescu / pynetdicom / viewers)",
        " / ".join(f"{load.cpu(role):.0f}" for role in ("storescu", "pynetdicom", "viewer")),
        "s",
    )

    failed = load.failed_associations
    assert failed == [], f"{len(failed)} failed, {failed[:3]}\n{server_log(server)}"
    assert load.store_failures == Counter(), load.store_failures
    assert load.http_errors == Counter(), load.error_samples
    assert load.transport_errors == 0, load.error_samples
    assert min(load.opened.values()) > 0, f"viewers who found nothing to open: {load.opened}"
    assert missing == set(), f"{len(missing)} acknowledged instances are not in the index"
    per_study = Counter(study for _, study, _ in acknowledged.values())
    wrong = {uid: (n, counted.get(uid)) for uid, n in per_study.items() if counted.get(uid) != n}
    assert wrong == {}, f"{len(wrong)} studies' QIDO-RS counts are not what was acknowledged"
    assert alive, f"the server does not answer after the load:\n{server_log(server)}"
    assert listeners_after == listeners, "a listener process died during the load"


# -- set-up -------------------------------------------------------------------------------


def modality_configs(port: int, folder: Path) -> list[dict[str, Any]]:
    storescu = need("storescu")
    configs = []
    for index in range(STORESCU + PYNETDICOM):
        pynetdicom = index >= STORESCU
        number = index - STORESCU + 1 if pynetdicom else index + 1
        aet = f"{'MODALITY' if pynetdicom else 'STORESCU'}{number:02d}"
        configs.append(
            {
                "role": "pynetdicom" if pynetdicom else "storescu",
                "name": aet,
                "aet": aet,
                "bind": f"127.0.0.{10 + number}" if pynetdicom else "127.0.0.1",
                "called": "DALAT",
                "port": port,
                "storescu": storescu,
                "folder": str(folder / aet),
                "seed": index,
            }
        )
    return configs


def register(check: StorageSettings, modalities: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Register the modalities as peers of the hospital, each accepted from its address
    only, and the viewers as its radiologists; the viewers' Authorization headers."""
    with Archive.open(check) as archive:
        peers = PeerRegistry(archive.engine)
        peers.add(name="loader", aet=SCU_AET, host="127.0.0.1", port=104, hospital=HOSPITAL)
        for config in modalities:
            peers.add(
                name=config["name"].lower(),
                aet=config["aet"],
                host=config["bind"],
                port=104,
                hospital=HOSPITAL,
                check_host=True,
            )
        return [
            ensure_user(archive, f"radiologist{i:02d}", role="radiologist", hospital=HOSPITAL)
            for i in range(1, VIEWERS + 1)
        ]


def preload(server: Server, folder: Path) -> dict[str, tuple[str, str, int]]:
    """A few studies stored before the load: SOP Instance UID → (sender, study, bytes)."""
    acknowledged: dict[str, tuple[str, str, int]] = {}
    for index in range(4):
        series = factories.ct_series(5, rows=128, columns=128, patient_id=f"P9{index:03d}")
        paths = factories.write_all(series, folder / str(index))
        assert send(server.dicom_port, paths) == [0] * len(paths)
        study = str(series[0].StudyInstanceUID)
        acknowledged |= {p.stem: (SCU_AET, study, p.stat().st_size) for p in paths}
    return acknowledged


@dataclass
class Client:
    name: str
    role: str
    process: subprocess.Popen[str]
    folder: Path

    @property
    def out(self) -> Path:
        return self.folder / f"{self.name}.json"

    def log(self) -> str:
        return (self.folder / f"{self.name}.log").read_text()[-3000:]


def start_clients(configs: list[dict[str, Any]], folder: Path) -> list[Client]:
    """Each client in a process of its own, set up and waiting for the start."""
    clients = []
    for config in configs:
        name = config["name"]
        config_path = folder / f"{name}.config.json"
        out = str(folder / f"{name}.json")
        config_path.write_text(json.dumps({**config, "seconds": SECONDS, "out": out}))
        with (folder / f"{name}.log").open("w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.reliability.load_clients", str(config_path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                cwd=Path(__file__).parents[2],
            )
        clients.append(Client(name, config["role"], process, folder))
    for client in clients:
        assert client.process.stdout is not None
        ready = client.process.stdout.readline().strip()
        assert ready == "ready", f"{client.name} did not start:\n{client.log()}"
    return clients


# -- what the clients did -----------------------------------------------------------------


@dataclass
class Load:
    results: dict[str, tuple[str, dict[str, Any]]]
    """Client name → (role, what it wrote)."""

    @classmethod
    def of(cls, clients: list[Client]) -> "Load":
        crashed = [
            f"{c.name} exited with {c.process.returncode}:\n{c.log()}"
            for c in clients
            if c.process.returncode != 0 or not c.out.exists()
        ]
        assert not crashed, "\n".join(crashed)
        return cls({c.name: (c.role, json.loads(c.out.read_text())) for c in clients})

    def of_role(self, *roles: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for name, (role, result) in self.results.items():
            if role in roles:
                yield name, result

    @property
    def stores(self) -> Iterator[tuple[str, list[Any]]]:
        """(sender, [SOP Instance UID, Study Instance UID, status, seconds, bytes])"""
        for name, result in self.of_role("storescu", "pynetdicom"):
            for row in result["stores"]:
                yield name, row

    @property
    def acknowledged(self) -> dict[str, tuple[str, str, int]]:
        """SOP Instance UID → (sender, study, bytes) of every instance stored with 0x0000."""
        return {
            sop: (name, study, size)
            for name, (sop, study, status, _, size, _) in self.stores
            if status == 0
        }

    @property
    def store_failures(self) -> Counter[str]:
        """Statuses other than success, with the sender (an unanswered C-STORE of an
        association that failed counts with the association, not here)."""
        return Counter(
            f"{name}: 0x{row[2]:04X}" for name, row in self.stores if row[2] not in (0, None)
        )

    def associations(self, role: str) -> list[list[Any]]:
        return [row for _, result in self.of_role(role) for row in result["associations"]]

    @property
    def failed_associations(self) -> list[list[Any]]:
        rows = self.associations("storescu") + self.associations("pynetdicom")
        return [row for row in rows if row[0] not in ("released", "limit")]

    @property
    def requests(self) -> list[list[Any]]:
        """[kind, HTTP status or None, seconds, bytes, time sent] of every viewer request."""
        return [row for _, result in self.of_role("viewer") for row in result["requests"]]

    @property
    def http_errors(self) -> Counter[str]:
        return Counter(
            f"{kind}: {status}"
            for kind, status, *_ in self.requests
            if status is not None and status not in OK_HTTP
        )

    @property
    def transport_errors(self) -> int:
        return sum(1 for _, status, *_ in self.requests if status is None)

    @property
    def error_samples(self) -> list[str]:
        return [e for _, result in self.of_role("viewer") for e in result["errors"]][:10]

    @property
    def opened(self) -> dict[str, int]:
        """Viewer → how many studies it opened."""
        return {name: result["studies_opened"] for name, result in self.of_role("viewer")}

    @property
    def busiest_viewer(self) -> int:
        """The most requests one viewer (one user) made in a minute (a sliding minute, or the
        whole load if shorter), to compare with PACS_RATE_LIMIT."""
        most = 0
        for _, result in self.of_role("viewer"):
            sent = sorted(row[4] for row in result["requests"])
            first = 0
            for last, at in enumerate(sent):
                while at - sent[first] > 60:
                    first += 1
                most = max(most, last - first + 1)
        return most

    def cpu(self, role: str) -> float:
        return float(sum(result["cpu_seconds"] for _, result in self.of_role(role)))

    def record(self, figures: Figures, duration: float) -> None:
        record = figures.record
        record("load duration (the clients' time, until the last one finished)", duration, "s")
        record("modalities sending at once (storescu + pynetdicom)", f"{STORESCU} + {PYNETDICOM}")
        record("viewers reading at once (DICOMweb, one user each)", VIEWERS)
        for role in ("storescu", "pynetdicom"):
            rows = self.associations(role)
            outcomes = Counter(row[0] for row in rows)
            record(f"associations made, {role}", outcomes["released"])
            record(f"associations refused by a configured limit, {role}", outcomes["limit"])
            record(
                f"associations rejected or aborted otherwise, {role}",
                len(rows) - outcomes["released"] - outcomes["limit"],
            )
        stores = list(self.stores)
        acknowledged = self.acknowledged
        stored_bytes = sum(size for _, _, size in acknowledged.values())
        record("instances sent", len(stores))
        record("instances acknowledged (0x0000)", len(acknowledged))
        record("C-STORE failure statuses", sum(self.store_failures.values()))
        record("instances stored per second", len(acknowledged) / duration, "/s")
        record("MB stored per second", stored_bytes / 1e6 / duration, "MB/s")
        record(
            "C-STORE latency p50 / p95 / p99 (pynetdicom)",
            percentiles([row[3] for name, row in stores if row[3] is not None and row[2] == 0]),
            "ms",
        )
        record(
            "storescu run, one study on one association, p50 / p95 / p99",
            percentiles([row[1] for row in self.associations("storescu") if row[0] == "released"]),
            "ms",
        )
        requests = self.requests
        record("HTTP requests", len(requests))
        record("HTTP requests per second", len(requests) / duration, "/s")
        record("HTTP error responses (4xx/5xx)", sum(self.http_errors.values()))
        record("HTTP transport errors", self.transport_errors)
        record("studies opened by the viewers", sum(self.opened.values()))
        record(
            f"most requests by one viewer in any minute (limit {RATE_LIMIT})", self.busiest_viewer
        )
        by_kind: dict[str, list[float]] = defaultdict(list)
        for kind, _, seconds, *_ in requests:
            by_kind[kind].append(seconds)
        for kind, seconds in sorted(by_kind.items()):
            record(
                f"{kind}: requests (per second)",
                f"{len(seconds)} ({len(seconds) / duration:.1f}/s)",
            )
            record(f"{kind}: latency p50 / p95 / p99", percentiles(seconds), "ms")


def percentiles(seconds: list[float]) -> str:
    """p50 / p95 / p99 in milliseconds."""
    if len(seconds) < 2:
        return " / ".join([f"{seconds[0] * 1000:.0f}"] * 3) if seconds else "none"
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return " / ".join(f"{cuts[p - 1] * 1000:.0f}" for p in (50, 95, 99))


# -- the server ---------------------------------------------------------------------------


def service_pids(server: Server) -> list[int]:
    """The server and every process under it: listeners, pixel workers (started by any of
    its threads, so not all in Server.children())."""
    assert server.process is not None
    pids, index = [server.process.pid], 0
    while index < len(pids):
        with contextlib.suppress(OSError):  # gone meanwhile
            for task in Path(f"/proc/{pids[index]}/task").iterdir():
                pids += [int(child) for child in (task / "children").read_text().split()]
        index += 1
    return pids


def cpu_seconds(server: Server) -> float:
    """User and system CPU time of the service's processes so far."""
    ticks = 0
    for pid in service_pids(server):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def sum_of_peaks(server: Server) -> int:
    """The peak resident sizes of the service's processes, added (KiB): more than they
    ever held at once, as each peaked at its own moment."""
    total = 0
    for pid in service_pids(server):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return total


def answers(server: Server) -> bool:
    """Whether the server still runs and answers /health and C-ECHO."""
    if server.process is None or server.process.poll() is not None:
        return False
    health = httpx.get(f"http://127.0.0.1:{server.http_port}/health", timeout=30)
    echo = associate(server.dicom_port, Verification)
    if not echo.is_established:
        return False
    status = echo.send_c_echo()
    echo.release()
    return health.status_code == 200 and status.get("Status") == 0


def qido_counts(server: Server, studies: set[str]) -> dict[str, int]:
    """Number of Study Related Instances of each study, through QIDO-RS (as an admin)."""
    counts: dict[str, int] = {}
    uids = sorted(studies)
    url = f"http://127.0.0.1:{server.http_port}/dicom-web/studies"
    with httpx.Client(headers=ADMIN_HEADERS, timeout=60) as client:
        for start in range(0, len(uids), 50):
            batch = uids[start : start + 50]
            response = client.get(
                url,
                params={
                    "StudyInstanceUID": "\\".join(batch),
                    "includefield": "00201208",
                    "limit": str(len(batch)),
                },
                headers={"Accept": "application/dicom+json"},
            )
            assert response.status_code in OK_HTTP, response.text
            for study in response.json() if response.status_code == 200 else []:
                uid = study["0020000D"]["Value"][0]
                counts[uid] = int(study["00201208"]["Value"][0])
    return counts


def server_log(server: Server) -> str:
    return server.log.read_text()[-5000:] if server.log else ""
