"""Outages: what modalities and viewers see while a resource `pacs serve` depends on is gone,
and that the same process serves again by itself once it is back.

While modalities keep sending (C-STORE over two associations, and STOW-RS), each test takes
one resource away for a while (a fault proxy, tests/reliability/faults.py, stands between
the server and PostgreSQL or S3), then gives it back:

- the PostgreSQL index unreachable: C-STORE 0xA700, STOW-RS, QIDO-RS and /health 503 (with
  Retry-After where a client may retry), and the same process serves again on its own;
- PostgreSQL silent (a partition or a hung server: the proxy holds the bytes): every store
  answered within PACS_INDEX_TIMEOUT (0xA700, 503), /health 503 within 3 s, and the
  commits begun meanwhile go through once it answers, their blobs kept;
- PostgreSQL killed (a cluster of the test's own, every process SIGKILLed) and started
  again: refused meanwhile, nothing acknowledged lost to its crash recovery;
- the S3 object store unreachable, without a spool (0xA700 at once) and with
  ``PACS_S3_SPOOL_MB`` (acknowledged from the local durable spool until its limit, then
  0xA700); the spool drains by itself once S3 is back;
- S3 slow, then not answering at all: every store answers within the modality's DIMSE
  timeout, success or 0xA700, never a hang;
- the disk full (a small tmpfs): 0xA700 and 503, no partial file left behind;
- the embedded SQLite index locked by another process (a backup tool's ``BEGIN
  EXCLUSIVE``): 0xA700 within the modality's timeout (after the 10 s busy timeout, once
  for a whole batch of stores), and stores again once it lets go;
- AI models that crash or hang on a study: those jobs fail with their reason, the others
  finish, and the server keeps storing throughout.

Whatever happened, every instance that got a success status is in the archive afterwards,
byte for byte (its dataset after the File Meta Information, which the archive writes
itself), and a refused one sent again once the resource is back is taken.
"""

import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from sqlalchemy import Connection, event

from pacs.listeners import listener_count
from storage import Archive, PeerRegistry, StorageSettings, StorageUnavailable
from storage.index.engine import create_index_engine, migrate
from storage.index.writer import IndexWriter
from tests import factories
from tests.auth import ensure_user, http
from tests.conftest import SCU_AET, associate, free_port
from tests.inference.misbehaving import make_bundle
from tests.reliability.faults import FaultProxy
from tests.reliability.figures import FULL, ONE_AT_A_TIME, Figures, sized
from tests.reliability.own_postgres import OwnPostgres
from tests.reliability.traffic import after_meta, stow_acknowledged, stow_body
from tests.servers import Server, send
from tests.test_triage import _send, chest_cr
from viewer_api.app import HEALTH_TIMEOUT

pytestmark = ONE_AT_A_TIME

ROOT = Path(__file__).resolve().parents[2]

MODALITY_TIMEOUT = 30.0
"""The test modalities' DIMSE and HTTP timeout (pynetdicom's default DIMSE timeout)."""
OUTAGE = sized(3, 60)
"""Seconds each outage lasts."""
RECOVERY_BOUND = 60.0
"""Seconds within which the server must serve again once the resource is back (R3)."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One C-STORE, or one STOW-RS request, and what the modality or client saw."""

    channel: str  # "C-STORE" or "STOW-RS"
    uids: tuple[str, ...]
    started: float  # time.monotonic()
    took: float
    answer: str  # "0x0000", "0xA700"..., "HTTP 200", "HTTP 503"..., "no answer"
    retry_after: str | None = None

    @property
    def ended(self) -> float:
        return self.started + self.took


@dataclass
class Traffic:
    """Modalities that keep sending new instances to a server until stopped: C-STORE over
    `associations` associations (associating again when one is lost), and one STOW-RS
    client posting `stow_batch` instances a request."""

    server: Server
    folder: Path
    associations: int = 2
    stow: bool = True
    stow_batch: int = 2
    pause: float = 0.05
    """Seconds a sender waits between two stores (a modality's pace)."""
    attempts: list[Attempt] = field(default_factory=list)
    acknowledged: dict[str, Path] = field(default_factory=dict)
    """SOP Instance UID: the file sent, for every instance that got success."""
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> "Traffic":
        for index in range(self.associations):
            self._threads.append(threading.Thread(target=self._dimse, args=(index,), daemon=True))
        if self.stow:
            self._threads.append(threading.Thread(target=self._stow, daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(MODALITY_TIMEOUT + 15)
            assert not thread.is_alive(), "a modality hangs past its own timeout"

    def stored_on_both(self, after: float) -> float:
        """When both channels had stored again since `after` (waiting for it): the later
        end."""
        return max(
            self.wait_for(_stored_over("C-STORE"), after=after).ended,
            self.wait_for(_stored_over("STOW-RS"), after=after).ended,
        )

    def wait_for(
        self, ok: Callable[[Attempt], bool], after: float, timeout: float = RECOVERY_BOUND
    ) -> Attempt:
        """The first attempt started at or after `after` that `ok` accepts, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = [a for a in self.attempts if a.started >= after and ok(a)]
            if found:
                return min(found, key=lambda a: a.started)
            assert time.monotonic() < deadline, f"nothing {ok.__doc__} after {timeout:.0f} s"
            time.sleep(0.05)

    def during(self, start: float, end: float) -> list[Attempt]:
        """The attempts that started at or after `start` and ended by `end`: those of a fault
        that began at `start` (each fault is in place when its switch returns) and ended at
        `end`."""
        with self._lock:
            return [a for a in self.attempts if a.started >= start and a.ended <= end]

    def answered(self, start: float, end: float) -> list[Attempt]:
        """The attempts answered between `start` and `end`, whenever they started."""
        with self._lock:
            return [a for a in self.attempts if start <= a.ended <= end]

    def _record(self, attempt: Attempt, acknowledged: dict[str, Path]) -> None:
        with self._lock:
            self.attempts.append(attempt)
            self.acknowledged.update(acknowledged)

    def _new_files(self, name: str, count: int, study: str, series: str) -> list[Path]:
        datasets = [
            factories.image(study_uid=study, series_uid=series, rows=64, columns=64)
            for _ in range(count)
        ]
        return factories.write_all(datasets, self.folder / name)

    def _dimse(self, index: int) -> None:
        study, series = generate_uid(), generate_uid()
        assoc = None
        try:
            while not self._stop.is_set():
                if assoc is None or not assoc.is_established:
                    started = time.monotonic()
                    try:
                        assoc = associate(
                            self.server.dicom_port, CTImageStorage, timeout=MODALITY_TIMEOUT
                        )
                    except (RuntimeError, OSError):
                        assoc = None
                    if assoc is None or not assoc.is_established:
                        took = time.monotonic() - started
                        self._record(Attempt("C-STORE", (), started, took, "no association"), {})
                        self._stop.wait(0.5)
                        continue
                (path,) = self._new_files(f"dimse-{index}", 1, study, series)
                started = time.monotonic()
                try:
                    status = assoc.send_c_store(path)
                except (RuntimeError, OSError):  # the association ended under it
                    status = Dataset()
                took = time.monotonic() - started
                if "Status" in status:
                    answer = f"0x{int(status.Status):04X}"
                else:  # pynetdicom gave up waiting, or the association was lost
                    answer = "no answer"
                    assoc.abort()
                acknowledged = {path.stem: path} if answer == "0x0000" else {}
                self._record(Attempt("C-STORE", (path.stem,), started, took, answer), acknowledged)
                self._stop.wait(self.pause)
        finally:
            if assoc is not None and assoc.is_established:
                assoc.release()

    def _stow(self) -> None:
        study, series = generate_uid(), generate_uid()
        url = f"http://127.0.0.1:{self.server.http_port}/dicom-web/studies"
        with httpx.Client(timeout=MODALITY_TIMEOUT) as client:
            while not self._stop.is_set():
                paths = self._new_files("stow", self.stow_batch, study, series)
                body, headers = stow_body(paths)
                started = time.monotonic()
                try:
                    response = client.post(url, content=body, headers=headers)
                except httpx.TransportError:
                    took = time.monotonic() - started
                    uids = tuple(p.stem for p in paths)
                    self._record(Attempt("STOW-RS", uids, started, took, "no answer"), {})
                    self._stop.wait(0.5)
                    continue
                took = time.monotonic() - started
                stored = stow_acknowledged(response)
                attempt = Attempt(
                    "STOW-RS",
                    tuple(p.stem for p in paths),
                    started,
                    took,
                    f"HTTP {response.status_code}",
                    response.headers.get("retry-after"),
                )
                self._record(attempt, {p.stem: p for p in paths if p.stem in stored})
                self._stop.wait(self.pause)


def _answers(attempts: list[Attempt], channel: str) -> Counter[str]:
    return Counter(a.answer for a in attempts if a.channel == channel)


def _answered_in_time(traffic: Traffic) -> None:
    """Every store and association of the run was answered while the modality waited: no
    timeout on its side, whatever the server went through."""
    unanswered = [a for a in traffic.attempts if a.answer in ("no answer", "no association")]
    assert not unanswered, unanswered[:5]
    assert max(a.took for a in traffic.attempts) < MODALITY_TIMEOUT


def _stored(a: Attempt) -> bool:
    """stored"""
    return a.answer in ("0x0000", "HTTP 200")


def _refused(a: Attempt) -> bool:
    """refused with 0xA700"""
    return a.answer == "0xA700"


def _stored_over(channel: str) -> Callable[[Attempt], bool]:
    def ok(a: Attempt) -> bool:
        return a.channel == channel and _stored(a)

    ok.__doc__ = f"stored over {channel}"
    return ok


def _get(server: Server, path: str, **params: str) -> httpx.Response:
    url = f"http://127.0.0.1:{server.http_port}{path}"
    return http.get(url, params=params, timeout=MODALITY_TIMEOUT)


def _prepare(server: Server, database_url: str | None = None) -> None:
    """Register the test modality and the administrator in the server's index, here rather
    than with two `pacs` commands (a second or more each)."""
    settings = StorageSettings(
        data_dir=server.data_dir, database_url=database_url, min_free_mb=0, _env_file=None
    )
    with Archive.open(settings) as archive:
        PeerRegistry(archive.engine).add(name="ct", aet=SCU_AET, host="127.0.0.1", port=104)
        ensure_user(archive)
    server.has_admin = True


def _stop(server: Server) -> None:
    if server.process is not None and server.process.poll() is None:
        server.stop()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """The servers a test started, stopped at its end even when it failed half-way (a test
    stops its own earlier, to read the archive as they left it)."""
    started: list[Server] = []
    yield started
    for server in started:
        _stop(server)


def _check_archive(settings: StorageSettings, acknowledged: dict[str, Path]) -> int:
    """Every acknowledged instance is indexed and its blob (read from `settings`' store)
    holds the dataset sent; how many were checked."""
    with Archive.open(settings) as archive:
        stored = {i.sop_instance_uid: i for i in archive.iter_instances()}
        lost = sorted(set(acknowledged) - set(stored))
        assert not lost, f"{len(lost)} acknowledged instances lost, e.g. {lost[:3]}"
        for uid, path in acknowledged.items():
            with archive.blobs.open(stored[uid].blob_key) as blob:
                assert after_meta(blob.read()) == after_meta(path.read_bytes()), uid
            assert archive.blob_matches(stored[uid].blob_key, stored[uid].sha256), uid
    return len(acknowledged)


RESEND = sized(50, 200)
"""How many of the instances refused during an outage are sent again after it, at most."""


def _resend_refused(server: Server, traffic: Traffic, outage: list[Attempt]) -> int:
    """Send again (some of) what was refused during the outage, as a modality retries: all
    taken."""
    refused = [
        traffic.folder / f"dimse-{i}" / f"{uid}.dcm"
        for a in outage
        if a.channel == "C-STORE" and a.answer != "0x0000"
        for uid in a.uids
        for i in range(traffic.associations)
        if (traffic.folder / f"dimse-{i}" / f"{uid}.dcm").exists()
    ][:RESEND]
    if refused:
        assert send(server.dicom_port, refused) == [0] * len(refused)
        traffic.acknowledged.update((p.stem, p) for p in refused)
    return len(refused)


def _record_outage(
    figures: Figures, traffic: Traffic, outage: list[Attempt], seconds: float, recovered: float
) -> None:
    stores = [a for a in outage if a.channel == "C-STORE" and a.uids]
    posts = [a for a in outage if a.channel == "STOW-RS"]
    figures.record("outage length", round(seconds, 1), "s")
    figures.record("C-STOREs tried during the outage", len(stores))
    figures.record("  acknowledged (0x0000)", sum(a.answer == "0x0000" for a in stores))
    figures.record("  refused with 0xA700", sum(a.answer == "0xA700" for a in stores))
    figures.record(
        "  longest wait for an answer", round(max((a.took for a in stores), default=0), 2), "s"
    )
    figures.record("STOW-RS requests during the outage", len(posts))
    figures.record(
        "  answered 503 with Retry-After",
        sum(a.answer == "HTTP 503" and a.retry_after is not None for a in posts),
    )
    figures.record("seconds to serve again after the resource returned", round(recovered, 2), "s")
    figures.record("instances acknowledged in all", len(traffic.acknowledged))


# -- 1. the PostgreSQL index -----------------------------------------------------------


@contextmanager
def _behind_postgres_proxy(
    postgres_url: str, servers: list[Server], tmp_path: Path, **settings: str
) -> Iterator[tuple[FaultProxy, Server]]:
    """A started server whose index is PostgreSQL through a fault proxy: the proxy to take
    the database away with, and the server, with `settings` added to its environment. The
    proxy stays up until the block ends, so a test stops the server within it."""
    with FaultProxy(5432) as proxy:
        proxied = postgres_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
        assert proxied != postgres_url
        environment = {"PACS_DATABASE_URL": proxied, "PACS_LOG_LEVEL": "WARNING", **settings}
        server = Server(tmp_path / "archive", free_port(), free_port(), settings=environment)
        servers.append(server)  # stopped at the end, whatever happens
        _prepare(server, postgres_url)
        server.start()
        yield proxy, server


@pytest.mark.postgres
def test_postgresql_unreachable_refuses_with_a700_and_503_then_serves_again(
    postgres_url: str, servers: list[Server], tmp_path: Path, figures: Figures
) -> None:
    with _behind_postgres_proxy(postgres_url, servers, tmp_path) as (proxy, server):
        traffic = Traffic(server, tmp_path / "sent")
        try:
            traffic.start()
            traffic.stored_on_both(after=0)

            proxy.down()
            down = time.monotonic()
            probes: list[tuple[str, httpx.Response]] = []
            while time.monotonic() < down + OUTAGE:
                time.sleep(min(1.0, OUTAGE / 3))
                probes.append(("QIDO-RS", _get(server, "/dicom-web/studies")))
                probes.append(("/health", _get(server, "/health")))
            proxy.restore()
            restored = time.monotonic()
            recovered = traffic.stored_on_both(after=restored)
            assert _get(server, "/health").status_code == 200
            assert _get(server, "/dicom-web/studies").status_code == 200
        finally:
            traffic.stop()

        outage = traffic.during(down, restored)
        _answered_in_time(traffic)
        stores = _answers(outage, "C-STORE")
        posts = [a for a in outage if a.channel == "STOW-RS"]
        assert stores, "the modalities sent nothing during the outage"
        assert posts, "the STOW-RS client sent nothing during the outage"
        assert set(stores) == {"0xA700"}, stores  # never 0x0000 without the index, never C211
        for post in posts:
            assert (post.answer, post.retry_after) == ("HTTP 503", "30"), post
        for name, response in probes:
            assert response.status_code == 503, (name, response.text)
            if name == "QIDO-RS":
                assert response.headers.get("retry-after") == "30"
        resent = _resend_refused(server, traffic, outage)
        _stop(server)

    direct = StorageSettings(
        data_dir=server.data_dir, database_url=postgres_url, min_free_mb=0, _env_file=None
    )
    found = _check_archive(direct, traffic.acknowledged)
    _record_outage(figures, traffic, outage, restored - down, recovered - restored)
    figures.record("refused instances sent again after, and taken", resent)
    figures.record("acknowledged instances found byte-identical after", found)


INDEX_TIMEOUT = sized(4, 20)
"""PACS_INDEX_TIMEOUT of the silent-PostgreSQL test: the default in the full run."""
SILENCE = sized(12, 60)
"""Seconds PostgreSQL says nothing: longer than PACS_INDEX_TIMEOUT, so stores are refused."""


@pytest.mark.postgres
def test_postgresql_silent_answers_every_store_in_time_and_keeps_late_commits(
    postgres_url: str, servers: list[Server], tmp_path: Path, figures: Figures
) -> None:
    """A partition or a hung server refuses nothing: each query waits. A store is answered
    within PACS_INDEX_TIMEOUT all the same (0xA700, 503), /health answers 503 within 3 s,
    and once the database answers again the commits begun meanwhile go through, their
    blobs kept: no indexed instance without its blob."""
    with _behind_postgres_proxy(
        postgres_url, servers, tmp_path, PACS_INDEX_TIMEOUT=str(INDEX_TIMEOUT)
    ) as (proxy, server):
        traffic = Traffic(server, tmp_path / "sent")
        health: list[tuple[float, int]] = []
        try:
            traffic.start()
            traffic.stored_on_both(after=0)

            proxy.blackhole()
            silent = time.monotonic()
            while time.monotonic() < silent + SILENCE:
                asked = time.monotonic()
                answer = _get(server, "/health")
                health.append((time.monotonic() - asked, answer.status_code))
                time.sleep(1)
            proxy.restore()
            restored = time.monotonic()
            recovered = traffic.stored_on_both(after=restored)
            assert _get(server, "/health").status_code == 200
        finally:
            traffic.stop()

        outage = traffic.during(silent, restored)
        _answered_in_time(traffic)
        stores = _answers(outage, "C-STORE")
        assert set(stores) <= {"0x0000", "0xA700"}, stores
        assert stores["0xA700"], "the silence outlasted PACS_INDEX_TIMEOUT: some refused"
        longest = max(a.took for a in outage if a.channel == "C-STORE")
        assert longest < INDEX_TIMEOUT + 5
        for post in (a for a in outage if a.channel == "STOW-RS" and a.answer != "HTTP 200"):
            assert (post.answer, post.retry_after) == ("HTTP 503", "30"), post
        assert {code for _, code in health} == {503}, health
        assert max(took for took, _ in health) < HEALTH_TIMEOUT + 2, health
        resent = _resend_refused(server, traffic, outage)
        checked = server.pacs("verify", "--no-orphans")
        assert checked.returncode == 0, checked.stdout + checked.stderr  # none missing
        _stop(server)

    direct = StorageSettings(
        data_dir=server.data_dir, database_url=postgres_url, min_free_mb=0, _env_file=None
    )
    found = _check_archive(direct, traffic.acknowledged)
    _record_outage(figures, traffic, outage, restored - silent, recovered - restored)
    figures.record("PACS_INDEX_TIMEOUT", INDEX_TIMEOUT, "s")
    figures.record("  longest wait for a C-STORE's answer", round(longest, 1), "s")
    figures.record("/health asked while silent, all 503", len(health))
    figures.record("  longest wait for its answer", round(max(t for t, _ in health), 1), "s")
    figures.record("refused instances sent again after, and taken", resent)
    figures.record("acknowledged instances found byte-identical after", found)
    figures.record("indexed instances without their blob (pacs verify)", 0)


@pytest.mark.postgres
def test_postgresql_killed_keeps_every_acknowledged_commit_and_serves_after_recovery(
    servers: list[Server], tmp_path: Path, figures: Figures
) -> None:
    """The database server itself crashes (a cluster of the test's own, every process
    SIGKILLed at once), mid-traffic: stores are refused meanwhile, and once it is started
    again (crash recovery) the same `pacs serve` stores again, and every instance it had
    acknowledged is there: a success status is only given for a commit PostgreSQL made
    durable."""
    with OwnPostgres(free_port()) as database:
        server = Server(
            tmp_path / "archive",
            free_port(),
            free_port(),
            settings={"PACS_DATABASE_URL": database.url, "PACS_LOG_LEVEL": "WARNING"},
        )
        servers.append(server)
        _prepare(server, database.url)
        server.start()
        traffic = Traffic(server, tmp_path / "sent")
        try:
            traffic.start()
            traffic.stored_on_both(after=0)
            time.sleep(random.uniform(0.0, 1.0))  # somewhere in the traffic
            killed = database.kill()
            down = time.monotonic()
            time.sleep(OUTAGE)
            starting = time.monotonic()  # stores from here may find it back already
            database.start()
            restored = time.monotonic()
            recovered = traffic.stored_on_both(after=restored)
        finally:
            traffic.stop()

        outage = traffic.during(down, starting)
        _answered_in_time(traffic)
        stores = _answers(outage, "C-STORE")
        assert stores, "the modalities sent nothing while the database was down"
        assert set(stores) == {"0xA700"}, stores
        for post in (a for a in outage if a.channel == "STOW-RS"):
            assert (post.answer, post.retry_after) == ("HTTP 503", "30"), post
        resent = _resend_refused(server, traffic, outage)
        checked = server.pacs("verify", "--no-orphans")
        assert checked.returncode == 0, checked.stdout + checked.stderr  # none missing
        _stop(server)
        direct = StorageSettings(
            data_dir=server.data_dir, database_url=database.url, min_free_mb=0, _env_file=None
        )
        found = _check_archive(direct, traffic.acknowledged)

    _record_outage(figures, traffic, outage, restored - down, recovered - restored)
    figures.record("PostgreSQL processes killed at once", killed)
    figures.record("refused instances sent again after, and taken", resent)
    figures.record("acknowledged instances found byte-identical after recovery", found)


# -- 2. the S3 object store --------------------------------------------------------------

SPOOL_MB = 1
"""The spool's limit in the test with a spool: filled within the outage by the traffic."""


def _spooled(server: Server) -> list[Path]:
    """The blobs waiting in the server's spool for S3."""
    spool = server.data_dir / "spool"
    return [p for p in spool.glob("[0-9a-f][0-9a-f]/[0-9a-f][0-9a-f]/*") if p.is_file()]


@contextmanager
def _behind_s3_proxy(
    s3_endpoint: str, s3_url: str, servers: list[Server], tmp_path: Path, **settings: str
) -> Iterator[tuple[FaultProxy, Server]]:
    """A started server whose blobs go to S3 (moto) through a fault proxy: the proxy to take
    S3 away with, and the server, with `settings` added to its environment. The proxy stays
    up until the block ends, so a test stops the server within it."""
    with FaultProxy(int(s3_endpoint.rsplit(":", 1)[1])) as proxy:
        environment = {
            "PACS_BLOB_URL": s3_url,
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}",
            "PACS_LOG_LEVEL": "WARNING",
            **settings,
        }
        server = Server(tmp_path / "archive", free_port(), free_port(), settings=environment)
        servers.append(server)  # stopped at the end, whatever happens
        _prepare(server)
        server.start()
        yield proxy, server


def _s3_check(server: Server, s3_url: str) -> StorageSettings:
    """The server's index, with blobs read from S3 itself (not through the proxy or spool)."""
    return StorageSettings(
        data_dir=server.data_dir.parent / "check",
        database_url=f"sqlite:///{server.data_dir / 'index.db'}",
        blob_url=s3_url,
        min_free_mb=0,
        _env_file=None,
    )


@pytest.mark.s3
@pytest.mark.parametrize(
    "spool_mb",
    [
        pytest.param(
            0,
            id="no-spool",
            marks=pytest.mark.skipif(
                not FULL, reason="full run only; in CI the stalled S3 of the next test shows it"
            ),
        ),
        pytest.param(SPOOL_MB, id="spool"),
    ],
)
def test_s3_unreachable_refuses_or_spools_and_drains_when_back(
    s3_endpoint: str,
    s3_url: str,
    spool_mb: int,
    servers: list[Server],
    tmp_path: Path,
    figures: Figures,
) -> None:
    with _behind_s3_proxy(
        s3_endpoint, s3_url, servers, tmp_path, PACS_S3_SPOOL_MB=str(spool_mb)
    ) as (proxy, server):
        traffic = Traffic(server, tmp_path / "sent")
        try:
            traffic.start()
            traffic.stored_on_both(after=0)
            proxy.down()
            down = time.monotonic()
            time.sleep(OUTAGE)
            if spool_mb:  # until the spool is full and the first store refused
                traffic.wait_for(_refused, after=down)
            health = _get(server, "/health")
            spooled_at_restore = len(_spooled(server))
            spooled_bytes = sum(p.stat().st_size for p in _spooled(server))
            proxy.restore()
            restored = time.monotonic()
            recovered = traffic.stored_on_both(after=restored)
        finally:
            traffic.stop()
        outage = traffic.during(down, restored)
        resent = _resend_refused(server, traffic, outage)
        deadline = time.monotonic() + RECOVERY_BOUND
        while _spooled(server):
            assert time.monotonic() < deadline, f"{len(_spooled(server))} blobs stay spooled"
            time.sleep(0.2)
        drained = time.monotonic()
        _stop(server)

    _answered_in_time(traffic)
    stores = _answers(outage, "C-STORE")
    posts = [a for a in outage if a.channel == "STOW-RS"]
    assert stores, "the modalities sent nothing during the outage"
    assert posts, "the STOW-RS client sent nothing during the outage"
    assert health.status_code == 200  # the index answers: the archive still serves reads
    if spool_mb == 0:
        assert set(stores) == {"0xA700"}, stores
        for post in posts:
            assert (post.answer, post.retry_after) == ("HTTP 503", "30"), post
    else:  # acknowledged from the spool first, then refused once it is full
        assert set(stores) == {"0x0000", "0xA700"}, stores
        # Each listener process counts what waits in the spool as it last saw it (its own
        # blobs, and the others' as of its last sweep): the spool fills to its limit and
        # somewhat past it, as many times over as there are processes at most.
        assert spooled_bytes > SPOOL_MB * 2**20 - 2**16  # full but for the last instance
    found = _check_archive(_s3_check(server, s3_url), traffic.acknowledged)
    _record_outage(figures, traffic, outage, restored - down, recovered - restored)
    if spool_mb:
        figures.record("spool limit (PACS_S3_SPOOL_MB)", spool_mb, "MiB")
        figures.record("blobs in the spool when S3 returned", spooled_at_restore)
        figures.record("their size", round(spooled_bytes / 2**20, 2), "MiB")
        figures.record("DICOM listener processes, each counting the spool", listener_count(0))
        figures.record(
            "seconds for the spool to drain after S3 returned", round(drained - restored, 1), "s"
        )
    figures.record("refused instances sent again after, and taken", resent)
    figures.record("acknowledged instances read back from S3, byte-identical", found)


# -- 3. a slow S3 ------------------------------------------------------------------------

S3_TIMEOUT, S3_ATTEMPTS = (5.0, 5) if FULL else (2.0, 2)
"""PACS_S3_TIMEOUT and PACS_S3_MAX_ATTEMPTS: the defaults in the full run; in CI, shorter,
so that a stalled S3 is given up on within seconds."""


@pytest.mark.s3
def test_slow_or_stalled_s3_answers_every_store_within_the_modality_timeout(
    s3_endpoint: str, s3_url: str, servers: list[Server], tmp_path: Path, figures: Figures
) -> None:
    slow_for = sized(4, 30)
    # A request under way when S3 stalls may take a refusal's time to end (a STOW-RS of two
    # instances, the first taken, the second refused); then two refusals in a row, at least.
    stall_for = 3 * S3_TIMEOUT * S3_ATTEMPTS + 2
    shorter = (
        {}
        if FULL
        else {"PACS_S3_TIMEOUT": str(S3_TIMEOUT), "PACS_S3_MAX_ATTEMPTS": str(S3_ATTEMPTS)}
    )
    with _behind_s3_proxy(s3_endpoint, s3_url, servers, tmp_path, **shorter) as (proxy, server):
        traffic = Traffic(server, tmp_path / "sent")
        try:
            traffic.start()
            traffic.wait_for(_stored_over("C-STORE"), after=0)
            proxy.slow(seconds=0.1, bytes_per_second=128 * 1024)  # each way, each connection
            slowed = time.monotonic()
            time.sleep(slow_for)
            proxy.slow(seconds=3600)  # S3 takes the connection and then says nothing
            stalled = time.monotonic()
            time.sleep(stall_for)
            proxy.restore()
            restored = time.monotonic()
            recovered = traffic.stored_on_both(after=restored)
        finally:
            traffic.stop()
        _stop(server)

    slow = traffic.during(slowed, stalled)
    stall = traffic.during(stalled, restored)
    _answered_in_time(traffic)
    assert set(_answers(slow, "C-STORE")) == {"0x0000"}, _answers(slow, "C-STORE")
    assert set(_answers(slow, "STOW-RS")) == {"HTTP 200"}, _answers(slow, "STOW-RS")
    assert set(_answers(stall, "C-STORE")) == {"0xA700"}, _answers(stall, "C-STORE")
    assert {(a.answer, a.retry_after) for a in stall if a.channel == "STOW-RS"} == {
        ("HTTP 503", "30")
    }
    found = _check_archive(_s3_check(server, s3_url), traffic.acknowledged)

    def record(phase: str, attempts: list[Attempt]) -> None:
        stores = [a for a in attempts if a.channel == "C-STORE"]
        figures.record(f"{phase}: C-STOREs tried", len(stores))
        figures.record(f"{phase}:   acknowledged", sum(a.answer == "0x0000" for a in stores))
        figures.record(f"{phase}:   refused with 0xA700", sum(a.answer == "0xA700" for a in stores))
        longest = max((a.took for a in stores), default=0)
        figures.record(f"{phase}:   longest wait for an answer", round(longest, 2), "s")

    figures.record("PACS_S3_TIMEOUT x PACS_S3_MAX_ATTEMPTS", f"{S3_TIMEOUT:g} s x {S3_ATTEMPTS}")
    figures.record("slow: S3 holds each chunk 0.1 s, 128 KiB/s a way", slow_for, "s")
    record("slow", slow)
    figures.record("stalled: S3 takes the bytes and never answers", stall_for, "s")
    record("stalled", stall)
    figures.record("modality timeouts (no answer within 30 s)", 0)
    figures.record(
        "seconds to serve again after S3 answered again", round(recovered - restored, 2), "s"
    )
    figures.record("acknowledged instances read back from S3, byte-identical", found)


# -- 4. a full disk ----------------------------------------------------------------------

DISK_MB = 32


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs of its own (root may mount one): a disk that fills up for real."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a {DISK_MB} MiB tmpfs to fill (needs root or CAP_SYS_ADMIN): "
            f"{mounted.stderr.strip()}"
        )
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=False)


class Filler:
    """Takes every free byte of a file system, and keeps taking what is freed, until
    :meth:`free` gives it all back."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "filler"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._top_up, daemon=True)

    def fill(self) -> None:
        self._take()
        self._thread.start()

    def _take(self) -> None:
        for size in (1 << 20, 1 << 12):
            chunk = b"\0" * size
            while True:
                try:
                    if os.write(self._fd, chunk) < size:
                        break
                except OSError:
                    break

    def _top_up(self) -> None:
        while not self._stop.wait(0.005):
            self._take()

    def free(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        os.close(self._fd)
        self.path.unlink()


def _blob_files(data_dir: Path) -> set[str]:
    return {p.name for p in (data_dir / "blobs").glob("[0-9a-f][0-9a-f]/[0-9a-f][0-9a-f]/*")}


def test_a_full_disk_refuses_with_a700_and_503_leaves_no_partial_file_and_recovers(
    small_disk: Path, servers: list[Server], tmp_path: Path, figures: Figures
) -> None:
    server = Server(small_disk, free_port(), free_port(), settings={"PACS_LOG_LEVEL": "WARNING"})
    servers.append(server)  # stopped at the end, whatever happens
    _prepare(server)
    server.start()
    traffic = Traffic(server, tmp_path / "sent")
    filler = Filler(small_disk)
    try:
        traffic.start()
        traffic.stored_on_both(after=0)
        filler.fill()
        full = time.monotonic()
        time.sleep(OUTAGE)
        reads = [_get(server, "/health"), _get(server, "/dicom-web/studies")]
        filler.free()
        freed = time.monotonic()
        recovered = traffic.stored_on_both(after=freed)
    finally:
        traffic.stop()
        if filler.path.exists():
            filler.free()
    outage = traffic.during(full, freed)
    resent = _resend_refused(server, traffic, outage)
    _stop(server)

    _answered_in_time(traffic)
    stores = _answers(outage, "C-STORE")
    posts = [a for a in outage if a.channel == "STOW-RS"]
    assert stores["0xA700"], "no store was refused while the disk was full"
    assert posts, "the STOW-RS client sent nothing while the disk was full"
    # A store may still fit in what a refused one gave back: success is durable, or A700.
    assert set(stores) <= {"0x0000", "0xA700"}, stores
    for post in posts:
        assert post.answer in ("HTTP 200", "HTTP 503"), post
        assert post.answer == "HTTP 200" or post.retry_after == "30", post
    assert [r.status_code for r in reads] == [200, 200]  # what is stored can still be read
    staging = small_disk / "blobs" / ".staging"
    assert sorted(p.name for p in staging.iterdir()) == []  # no partial file left behind
    settings = StorageSettings(data_dir=small_disk, min_free_mb=0, _env_file=None)
    with Archive.open(settings) as archive:
        indexed = {i.blob_key for i in archive.iter_instances()}
    assert _blob_files(small_disk) == indexed  # no blob without its index row, nor the reverse
    found = _check_archive(settings, traffic.acknowledged)
    _record_outage(figures, traffic, outage, freed - full, recovered - freed)
    figures.record("reads (/health, QIDO-RS) while full", "200, 200")
    figures.record("partial or unindexed files left", 0)
    figures.record("refused instances sent again after, and taken", resent)
    figures.record("acknowledged instances found byte-identical after", found)


# -- 5. the embedded index locked by another process -------------------------------------

BUSY_TIMEOUT = 10.0
"""The embedded index's busy_timeout (storage/index/engine.py), in seconds."""
LOCK_HELD = sized(0, 45)
"""Seconds the other process holds the index locked at least; then until a store was refused
(a busy timeout or two), and a second more."""

_LOCKER = """
import sqlite3, sys
index = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
index.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
index.execute("COMMIT")
"""


def test_an_index_locked_by_another_process_refuses_with_a700_in_time_then_stores(
    servers: list[Server], tmp_path: Path, figures: Figures
) -> None:
    """A backup tool (or a `sqlite3` shell) holds ``BEGIN EXCLUSIVE`` on the embedded index
    longer than the busy timeout: stores are refused with 0xA700 while the modality still
    waits for the answer (not a timeout on its side, nor 0x0110), and taken again once it
    lets go."""
    server = Server(
        tmp_path / "archive", free_port(), free_port(), settings={"PACS_LOG_LEVEL": "ERROR"}
    )
    servers.append(server)  # stopped at the end, whatever happens
    _prepare(server)
    server.start()
    traffic = Traffic(server, tmp_path / "sent")
    index = server.data_dir / "index.db"
    try:
        traffic.start()
        traffic.stored_on_both(after=0)
        with subprocess.Popen(
            [sys.executable, "-c", _LOCKER, str(index)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as locker:
            assert locker.stdin is not None
            assert locker.stdout is not None
            try:
                assert locker.stdout.readline().strip() == "locked"
                locked = time.monotonic()
                time.sleep(LOCK_HELD)
                traffic.wait_for(_refused, after=locked - MODALITY_TIMEOUT)
                time.sleep(1.0)
                releasing = time.monotonic()
            finally:
                locker.stdin.write("\n")  # let go
                locker.stdin.flush()
            assert locker.wait(30) == 0
        released = time.monotonic()
        recovered = traffic.stored_on_both(after=released)
    finally:
        traffic.stop()
    _stop(server)

    # Answered a second or more after the lock was taken (a store takes milliseconds
    # otherwise: each of these waited for it, whether it started before or after), and
    # before this test told the other process to let go.
    outage = traffic.answered(locked + 1.0, releasing)
    stores = _answers(outage, "C-STORE")
    assert stores, "no store was answered while the index was locked"
    assert set(stores) == {"0xA700"}, stores
    _answered_in_time(traffic)
    # A STOW-RS request that started before the lock may have stored its first parts: it
    # is judged only when it started after.
    for post in traffic.during(locked, releasing):
        if post.channel == "STOW-RS":
            assert (post.answer, post.retry_after) == ("HTTP 503", "30"), post
    settings = StorageSettings(data_dir=server.data_dir, min_free_mb=0, _env_file=None)
    found = _check_archive(settings, traffic.acknowledged)
    figures.record("busy timeout of the embedded index", BUSY_TIMEOUT, "s")
    _record_outage(figures, traffic, outage, released - locked, recovered - released)
    figures.record("modality timeouts (no answer within 30 s)", 0)
    figures.record("acknowledged instances found byte-identical after", found)


def test_a_batch_of_stores_waits_for_a_locked_index_once_not_once_a_store(
    tmp_path: Path,
) -> None:
    """The index writer commits the stores waiting together; when the index is locked, the
    whole batch is refused after one busy timeout. Tried again one by one, the last store of
    a batch of N was answered after N + 1 timeouts (found by the test above, held 45 s)."""
    settings = StorageSettings(data_dir=tmp_path / "archive", min_free_mb=0, _env_file=None)
    engine = create_index_engine(settings.resolved_database_url)
    event.listen(
        engine, "connect", lambda conn, _: conn.cursor().execute("PRAGMA busy_timeout=200")
    )
    migrate(engine)
    begins: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.startswith("BEGIN"):
            begins.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    writer = IndexWriter(engine)
    locker = sqlite3.connect(settings.data_dir / "index.db", isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")

        def store(conn: Connection, _now: object) -> None:
            conn.exec_driver_sql("SELECT 1")

        def refused() -> None:
            with pytest.raises(StorageUnavailable, match="database is locked"):
                writer.run(store)

        others = [threading.Thread(target=refused) for _ in range(3)]
        for other in others:  # queued together behind the first, whichever that is
            other.start()
        refused()
        for other in others:
            other.join(10)
    finally:
        locker.close()
        writer.close()
        engine.dispose()
    # One batch (two, if this machine was too slow to queue them within the lingering).
    assert len(begins) <= 2, begins


# -- 6. AI models that crash or hang -------------------------------------------------------

JOB_TIMEOUT = sized(10, 30)
"""PACS_AI_JOB_TIMEOUT: seconds a model run may take. A run's time counts from its start in a
model process, and after a crash or a hang that is a new process, which imports torch and
loads the model first: a few seconds on a busy CI machine."""
ROUTES = {"crasher": "HAND", "hanger": "FOOT", "steady": "CHEST"}
"""Each test model reads the chest radiographs of one body part: one study each."""


def _cr_study(body_part: str) -> list[Dataset]:
    cr = chest_cr("normal-IM-0135-0001.jpeg")
    cr.BodyPartExamined = body_part
    cr.StudyInstanceUID = generate_uid()
    cr.SeriesInstanceUID = generate_uid()
    cr.SOPInstanceUID = cr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return [cr]


def _jobs(server: Server, study: str) -> dict[str, dict[str, Any]]:
    """The study's AI jobs by model."""
    response = _get(server, "/api/ai/jobs", study=study)
    assert response.status_code == 200, response.text
    return {job["model"]: job for job in response.json()}


def _settled(server: Server, study: str, model: str, timeout: float) -> dict[str, Any]:
    """The job of `model` on `study`, once done, failed or skipped."""
    deadline = time.monotonic() + timeout
    while True:
        job = _jobs(server, study).get(model)
        if job is not None and job["state"] in ("done", "failed", "skipped"):
            return job
        assert time.monotonic() < deadline, f"{model} on {study}: {job}"
        time.sleep(0.3)


def test_models_that_crash_or_hang_fail_their_jobs_only_and_storing_goes_on(
    servers: list[Server], tmp_path: Path, figures: Figures
) -> None:
    models = tmp_path / "models"
    make_bundle(models, "crasher", mode="crash", route_cr=False)
    make_bundle(models, "hanger", mode="hang", route_cr=False)
    make_bundle(models, "steady", route_cr=False)
    (models / "routing.toml").write_text(
        "".join(
            f'[models.{m}]\nmodality = ["CR"]\nbody_part = ["{b}"]\n' for m, b in ROUTES.items()
        )
    )
    settings = {
        "PACS_AI_ENABLED": "true",
        "PACS_AI_QUIET_SECONDS": "1",
        "PACS_AI_JOB_TIMEOUT": str(JOB_TIMEOUT),
        "PACS_AI_WORKERS": "2",  # the other studies are read while one model hangs
        "PACS_MODELS_DIR": str(models),
        "PYTHONPATH": str(ROOT),  # the test models' network lives in tests/
        "PACS_LOG_LEVEL": "WARNING",
        "COLUMNS": "300",
    }
    server = Server(tmp_path / "archive", free_port(), free_port(), settings=settings)
    servers.append(server)  # stopped at the end, whatever happens
    _prepare(server)
    server.start()
    traffic = Traffic(server, tmp_path / "sent", pause=0.1)
    studies = {part: _cr_study(part) for part in ("HAND", "FOOT", "CHEST")}
    try:
        traffic.start()
        for datasets in studies.values():
            _send(server.dicom_port, datasets, tmp_path / "cr")
        uid = {part: str(datasets[0].StudyInstanceUID) for part, datasets in studies.items()}
        crashed = _settled(server, uid["HAND"], "crasher", 120)
        steady = _settled(server, uid["CHEST"], "steady", 120)
        later = _cr_study("CHEST")  # after the crash, maybe while the other model hangs
        _send(server.dicom_port, later, tmp_path / "cr")
        after = _settled(server, str(later[0].StudyInstanceUID), "steady", 120)
        hung = _settled(server, uid["FOOT"], "hanger", 120)
        listed = server.pacs("jobs")
    finally:
        traffic.stop()
    assert server.process is not None
    assert server.process.poll() is None  # still serving, the same process
    _stop(server)

    assert (crashed["state"], crashed["reason"]) == (
        "failed",
        "the model's process died during the run (exit code -9)",
    )
    assert (hung["state"], hung["reason"]) == (
        "failed",
        f"no result within {JOB_TIMEOUT:g} s; the model's process was stopped",
    )
    assert (steady["state"], steady["flagged"]) == ("done", True), steady["reason"]
    assert (after["state"], after["flagged"]) == ("done", True), after["reason"]
    assert listed.returncode == 0, listed.stderr
    assert "the model's process died during the run" in listed.stdout
    assert f"no result within {JOB_TIMEOUT:g} s" in listed.stdout
    _answered_in_time(traffic)
    stores = _answers(traffic.attempts, "C-STORE")
    posts = _answers(traffic.attempts, "STOW-RS")
    assert set(stores) == {"0x0000"}, stores  # the server kept storing throughout
    assert set(posts) == {"HTTP 200"}, posts
    settings_ = StorageSettings(data_dir=server.data_dir, min_free_mb=0, _env_file=None)
    found = _check_archive(settings_, traffic.acknowledged)
    figures.record("AI job time limit (PACS_AI_JOB_TIMEOUT)", JOB_TIMEOUT, "s")
    figures.record("job of the crashing model: failed", crashed["reason"])
    figures.record("job of the hanging model: failed", hung["reason"])
    figures.record("jobs of the other studies done (flagged as the model says)", 2)
    figures.record("C-STOREs meanwhile, all acknowledged", sum(stores.values()))
    figures.record("STOW-RS requests meanwhile, all 200", sum(posts.values()))
    figures.record("acknowledged instances found byte-identical after", found)
