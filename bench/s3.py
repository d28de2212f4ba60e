"""S3 benchmark: C-STORE ingest into S3-compatible storage against the folder store.

A 500-slice CT study goes by DCMTK storescu over one association (then four) into Dalat
PACS six ways: the folder store; S3 with no added latency; S3 behind a link with a round
trip of 10 ms and of 20 ms, as to an object store in another building; and S3 at 10 and
20 ms behind the local spool (``PACS_S3_SPOOL_MB``: acknowledged once fsynced locally,
uploaded behind), for which the time until the last object reached S3 is reported too.
The S3 server is moto's (the one that installs here from PyPI) on 127.0.0.1; the latency
is added by a small proxy in front of it that holds every chunk, each way, for half the
round trip (this kernel has no netem). The index is SQLite in every case, so only the blob
store changes. Figures are medians of the rounds; the ratio to the folder store is the result
(issue 4 aims at no worse than 2x).

moto is a Python server: it spends CPU of its own on every PUT, on the same two cores (at
the lowest priority, but the machine has only two), so the figures are a pessimistic bound
for a real S3, MinIO or Ceph RGW.

    .venv/bin/python bench/s3.py             # 3 rounds, about 10 minutes
    .venv/bin/python bench/s3.py --quick     # 1 round, 100 slices
"""

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from common import ENV, http_ok, storescu, wait
from generate import DATA, generate

HERE = Path(__file__).resolve().parent
S3_PORT, PROXY_PORT = 19000, 19001
DICOM_PORT, HTTP_PORT = 11412, 18412
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ENDPOINT_URL": f"http://127.0.0.1:{PROXY_PORT}",
}


class DelayProxy:
    """A TCP proxy that delivers every chunk, each way, `one_way` seconds after it came."""

    def __init__(self, listen: int, upstream: int) -> None:
        self.one_way = 0.0
        self._listen, self._upstream = listen, upstream
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> "DelayProxy":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result()
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _serve(self) -> None:
        await asyncio.start_server(self._connection, "127.0.0.1", self._listen)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream)
        for stream in (writer, up_writer):
            stream.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    writer.close()
                    return
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(1 << 16):
                queue.put_nowait((time.monotonic() + self.one_way, data))
        except ConnectionError:
            pass
        queue.put_nowait((0.0, b""))
        await sender


@contextmanager
def s3_server() -> Iterator[DelayProxy]:
    """moto_server on 127.0.0.1, behind the delaying proxy, at the lowest CPU priority: it
    stands for a server on other machines, and should take no CPU the archive needs."""
    moto = str(Path(sys.executable).parent / "moto_server")
    server = subprocess.Popen(
        ["nice", "-n", "19", moto, "-H", "127.0.0.1", "-p", str(S3_PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait(lambda: http_ok(f"http://127.0.0.1:{S3_PORT}/"), "moto_server")
        with DelayProxy(PROXY_PORT, S3_PORT) as proxy:
            yield proxy
    finally:
        server.terminate()
        server.wait(10)


def _bucket(name: str) -> None:
    import boto3

    os.environ.update(CREDENTIALS)
    boto3.client("s3").create_bucket(Bucket=name)


def _spooled(workdir: Path) -> int:
    return sum(1 for path in (workdir / "spool").glob("??/??/*") if len(path.name) == 32)


def store(blob_url: str | None, folders: list[Path], *, spool: bool) -> tuple[float, float]:
    """Run pacs serve on a fresh data folder, send the folders in parallel; the wall time
    until the last answer, and until the spool (if any) has drained to S3."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    env = {
        **ENV,
        **CREDENTIALS,
        "PACS_DATA_DIR": str(workdir),
        "PACS_LOG_LEVEL": "WARNING",
        "PACS_AI_ENABLED": "false",  # the archive's own work alone
        "PACS_DICOM_PORT": str(DICOM_PORT),
        "PACS_HTTP_PORT": str(HTTP_PORT),
        "PACS_ACCEPT_ANY_CALLER": "true",
    }
    if blob_url:
        env["PACS_BLOB_URL"] = blob_url
    if spool:
        env["PACS_S3_SPOOL_MB"] = "4096"
    log = (workdir / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "pacs", "serve"], env=env, stdout=log, stderr=log
    )
    try:
        wait(lambda: http_ok(f"http://127.0.0.1:{HTTP_PORT}/health"), "pacs serve")
        started = time.perf_counter()
        acknowledged = storescu("DALAT", DICOM_PORT, folders)
        while spool and _spooled(workdir):
            time.sleep(0.01)
        return acknowledged, max(acknowledged, time.perf_counter() - started)
    finally:
        server.terminate()
        server.wait(30)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, 100 slices")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    corpus = generate(DATA, quick=args.quick)
    rounds = 1 if args.quick else args.rounds
    count = sum(1 for _ in corpus.groups("ct", 1)[0].iterdir())
    cases = {
        "folder": (None, 0),
        "s3": ("s3", 0),
        "s3 10 ms": ("s3", 10),
        "s3 20 ms": ("s3", 20),
        "s3 10 ms, spool": ("spool", 10),
        "s3 20 ms, spool": ("spool", 20),
    }
    times: dict[str, list[float]] = {}
    drained: dict[str, list[float]] = {}
    with s3_server() as proxy:
        for round_number in range(rounds):
            for associations in (1, 4):
                for name, (kind, rtt) in cases.items():
                    proxy.one_way = rtt / 2000
                    url = None
                    if kind != "folder" and kind is not None:
                        bucket = f"bench-{round_number}-{associations}-{rtt}"
                        _bucket(bucket)
                        url = f"s3://{bucket}/archive"
                    seconds, in_s3 = store(
                        url, corpus.groups("ct", associations), spool=kind == "spool"
                    )
                    times.setdefault(f"{name}/{associations}", []).append(seconds)
                    drained.setdefault(f"{name}/{associations}", []).append(in_s3)
                    print(
                        f"  {name:15} {associations} assoc: {count / seconds:6.1f} inst/s"
                        f" acknowledged, all in S3 after {in_s3:5.1f} s",
                        flush=True,
                    )
    lines = [
        "| Blob store | 1 association | ratio | in S3 after "
        "| 4 associations | ratio | in S3 after |",
        "|---|---|---|---|---|---|---|",
    ]
    summary: dict[str, object] = {
        "instances": count,
        "rounds": rounds,
        "times_s": times,
        "in_s3_after_s": drained,
    }
    for name in cases:
        cells = []
        for associations in (1, 4):
            rate = count / statistics.median(times[f"{name}/{associations}"])
            folder = count / statistics.median(times[f"folder/{associations}"])
            in_s3 = statistics.median(drained[f"{name}/{associations}"])
            where = "" if name == "folder" else f"{in_s3:.1f} s"
            cells += [f"{rate:.1f} inst/s", f"{folder / rate:.2f}x", where]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    summary["table"] = table
    out = HERE / "results" / f"s3-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"\n{table}\n\nresults: {out}")


if __name__ == "__main__":
    main()
