"""DIMSE benchmark: Dalat PACS side by side with Orthanc, same files, same client, same run.

Cases (issue 3):
  * C-STORE of a 500-slice 512x512 CT study (16-bit, ~0.5 MB a file), 1 and 4 associations
  * C-STORE of 200 chest X-rays of ~10 MB (DX), 1 and 4 associations
  * C-FIND latency, p50 and p95, on an archive of 2,000 studies: by Patient ID, by a
    Patient Name wildcard, by a Study Date range (one findscu process per query)

The client is DCMTK (storescu, findscu) with TCP_NODELAY=1 for both servers. Servers get
fresh storage for every ingest round and alternate within each round; figures are medians.
Orthanc is Debian's package with Debian's defaults (fsync per file, MD5, storage access on
find, 16 KiB PDU, 4 DICOM threads), TcpNoDelay on and UTF-8 as its default encoding.

Orthanc 1.10 binds every interface, so the whole run happens in a loopback-only network
namespace that the script creates (as root) and removes.

    .venv/bin/python bench/dimse.py            # full: 3 rounds (about 15 minutes)
    .venv/bin/python bench/dimse.py --quick    # 1 round, fewer files (about 3 minutes)
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from common import CLIENT_AET, ENV, SERVER_ENV, sign_in, storescu, wait
from generate import DATA, Corpus, generate

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PACS = [sys.executable, "-m", "pacs"]
NAMESPACE = "dalatbench"


def _echo(aet: str, port: int) -> bool:
    command = ["echoscu", "-aet", CLIENT_AET, "-aec", aet, "127.0.0.1", str(port)]
    return subprocess.run(command, capture_output=True, env=ENV, check=False).returncode == 0


@dataclass
class Server:
    name: str
    aet: str
    dicom_port: int
    http_port: int
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bench-")))
    process: subprocess.Popen[bytes] | None = None
    settings: dict[str, str] = field(default_factory=dict)
    """More PACS_ settings for Dalat PACS."""
    headers: dict[str, str] = field(default_factory=dict)
    """What a request to its HTTP API carries: Dalat PACS's sign-in, none for Orthanc."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _started(self, command: list[str], env: dict[str, str]) -> None:
        log = (self.workdir / "server.log").open("wb")
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        wait(lambda: _echo(self.aet, self.dicom_port), f"{self.name} to answer C-ECHO")


class Dalat(Server):
    def start(self) -> None:
        env = {
            **SERVER_ENV,
            "PACS_DATA_DIR": str(self.workdir / "archive"),
            "PACS_LOG_LEVEL": "WARNING",
            "PACS_AI_ENABLED": "false",  # the archive alone, as Orthanc
            "PACS_DICOM_PORT": str(self.dicom_port),
            "PACS_HTTP_PORT": str(self.http_port),
            **self.settings,
        }
        subprocess.run(
            [
                *PACS,
                "remote",
                "add",
                "bench",
                "--aet",
                CLIENT_AET,
                "--host",
                "127.0.0.1",
                "--port",
                "11999",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        self._started([*PACS, "serve"], env)
        # The HTTP side answers (and signs in) once every listener process is up.
        self.headers = sign_in(env, self.http_port)


class Orthanc(Server):
    def config(self) -> dict[str, object]:
        storage = self.workdir / "storage"
        return {
            "Name": "bench",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "StorageCompression": False,
            "Plugins": [],
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "TcpNoDelay": True,
            "DefaultEncoding": "Utf8",
            "DicomModalities": {"bench": [CLIENT_AET, "127.0.0.1", 11999]},
            # Debian's defaults, stated so the comparison does not depend on them moving:
            "SyncStorageArea": True,
            "StoreMD5ForAttachments": True,
            "DicomThreadsCount": 4,
            "StorageAccessOnFind": "Always",
            "MaximumPduLength": 16384,
            "OverwriteInstances": False,
        }

    def start(self) -> None:
        path = self.workdir / "orthanc.json"
        path.write_text(json.dumps(self.config(), indent=2))
        self._started(["/usr/sbin/Orthanc", str(path)], ENV)


def _servers() -> list[Server]:
    return [Dalat("dalat", "DALAT", 11312, 18312), Orthanc("orthanc", "ORTHANC", 4242, 8042)]


@contextmanager
def _running(server: Server) -> Iterator[Server]:
    server.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{server.name}-"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _storescu(server: Server, folders: list[Path]) -> float:
    return storescu(server.aet, server.dicom_port, folders)


def ingest(corpus: Corpus, case: str, rounds: int) -> dict[str, object]:
    files = corpus.groups(case, 1)[0]
    count = sum(1 for _ in files.iterdir())
    size = sum(p.stat().st_size for p in files.iterdir())
    results: dict[str, list[float]] = {"dalat": [], "orthanc": []}
    for round_number in range(rounds):
        servers = _servers()
        order = servers if round_number % 2 == 0 else list(reversed(servers))
        for associations in (1, 4):
            for server in order:
                with _running(server):
                    seconds = _storescu(server, corpus.groups(case, associations))
                results.setdefault(f"{server.name}/{associations}", []).append(seconds)
                print(
                    f"  {case} {associations} assoc {server.name}: {count / seconds:6.1f} inst/s"
                    f" {size / seconds / 1e6:6.1f} MB/s",
                    flush=True,
                )
    summary: dict[str, object] = {"instances": count, "bytes": size}
    for key, seconds in results.items():
        if seconds:
            median = statistics.median(seconds)
            summary[key] = {
                "rounds_s": seconds,
                "instances_per_s": count / median,
                "mb_per_s": size / median / 1e6,
            }
    return summary


QUERIES = {
    "PatientID": ["-k", "PatientID=P000123"],
    "PatientName wildcard": ["-k", "PatientName=Nguy*"],
    "StudyDate range": ["-k", "StudyDate=20250101-20250131"],
}


def _findscu(server: Server, keys: list[str]) -> tuple[float, int]:
    command = [
        "findscu",
        "-S",
        "-aet",
        CLIENT_AET,
        "-aec",
        server.aet,
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "SpecificCharacterSet=ISO_IR 192",
        "-k",
        "StudyInstanceUID",
        "-k",
        "PatientName",
        "-k",
        "StudyDate",
        "-k",
        "ModalitiesInStudy",
        "-k",
        "NumberOfStudyRelatedInstances",
        *keys,
        "127.0.0.1",
        str(server.dicom_port),
    ]
    started = time.perf_counter()
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"findscu failed against {server.name}: {result.stderr[-500:]}")
    matches = result.stderr.count("Find Response:") + result.stdout.count("Find Response:")
    return elapsed, matches


def find(corpus: Corpus, repetitions: int) -> dict[str, object]:
    servers = _servers()
    summary: dict[str, object] = {"studies": corpus.find_studies}
    for server in servers:
        server.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{server.name}-"))
        server.start()
    try:
        for server in servers:
            _storescu(server, corpus.groups("find", 1))
        for label, keys in QUERIES.items():
            timings: dict[str, list[float]] = {s.name: [] for s in servers}
            matches: dict[str, int] = {}
            for repetition in range(repetitions):
                for server in servers if repetition % 2 == 0 else list(reversed(servers)):
                    elapsed, count = _findscu(server, ["-v", *keys])
                    timings[server.name].append(elapsed)
                    matches[server.name] = count
            entry: dict[str, object] = {}
            for name, values in timings.items():
                values.sort()
                entry[name] = {
                    "p50_ms": 1000 * statistics.median(values),
                    "p95_ms": 1000 * values[int(0.95 * (len(values) - 1))],
                    "matches": matches[name],
                }
            summary[label] = entry
            print(
                f"  C-FIND {label}: "
                + ", ".join(
                    f"{n} p50 {e['p50_ms']:.0f} ms p95 {e['p95_ms']:.0f} ms "
                    f"({e['matches']} matches)"
                    for n, e in entry.items()
                ),
                flush=True,
            )
    finally:
        for server in servers:
            server.stop()
    return summary


def _versions() -> dict[str, str]:
    def first_line(command: list[str]) -> str:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        return (result.stdout or result.stderr).strip().splitlines()[0]

    return {
        "orthanc": first_line(["/usr/sbin/Orthanc", "--version"]),
        "storescu": first_line(["storescu", "--version"]),
        "dalat_commit": first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "cpus": str(len(os.sched_getaffinity(0))),
    }


def _table(results: dict[str, object]) -> str:
    lines = ["| Case | Dalat PACS | Orthanc | Dalat / Orthanc |", "|---|---|---|---|"]
    for case, label in (("ct", "C-STORE CT 500 x 512²"), ("dx", "C-STORE DX 200 x 10 MB")):
        data = results.get(case)
        if not isinstance(data, dict):
            continue
        for associations in (1, 4):
            ours, theirs = data.get(f"dalat/{associations}"), data.get(f"orthanc/{associations}")
            if isinstance(ours, dict) and isinstance(theirs, dict):
                lines.append(
                    f"| {label}, {associations} association{'s' if associations > 1 else ''} | "
                    f"{ours['instances_per_s']:.1f} inst/s, {ours['mb_per_s']:.0f} MB/s | "
                    f"{theirs['instances_per_s']:.1f} inst/s, {theirs['mb_per_s']:.0f} MB/s | "
                    f"{ours['instances_per_s'] / theirs['instances_per_s']:.2f} |"
                )
    data = results.get("find")
    if isinstance(data, dict):
        for label in QUERIES:
            entry = data.get(label)
            if isinstance(entry, dict):
                ours, theirs = entry["dalat"], entry["orthanc"]
                lines.append(
                    f"| C-FIND {label} ({data['studies']} studies), p50 / p95 | "
                    f"{ours['p50_ms']:.0f} / {ours['p95_ms']:.0f} ms | "
                    f"{theirs['p50_ms']:.0f} / {theirs['p95_ms']:.0f} ms | "
                    f"{ours['p95_ms'] / theirs['p95_ms']:.2f} (p95) |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, fewer files")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", default="ct,dx,find", help="comma-separated: ct,dx,find")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.inside:
        _in_namespace(sys.argv[1:])
        return
    corpus = generate(DATA, quick=args.quick)
    rounds = 1 if args.quick else args.rounds
    results: dict[str, object] = {"versions": _versions(), "quick": args.quick, "rounds": rounds}
    cases = args.cases.split(",")
    for case in ("ct", "dx"):
        if case in cases:
            print(f"{case}: {rounds} round(s)", flush=True)
            results[case] = ingest(corpus, case, rounds)
    if "find" in cases:
        print("find:", flush=True)
        results["find"] = find(corpus, repetitions=10 if args.quick else 50)
    table = _table(results)
    results["table"] = table
    out = HERE / "results" / f"dimse-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\n{table}\n\nversions: {results['versions']}\nresults: {out}")


def _in_namespace(arguments: list[str]) -> None:
    """Re-run this script inside a fresh loopback-only network namespace."""
    subprocess.run(["ip", "netns", "delete", NAMESPACE], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", NAMESPACE], check=True)
    try:
        subprocess.run(
            ["ip", "netns", "exec", NAMESPACE, "ip", "link", "set", "lo", "up"], check=True
        )
        command = [
            "ip",
            "netns",
            "exec",
            NAMESPACE,
            sys.executable,
            __file__,
            "--inside",
            *arguments,
        ]
        sys.exit(subprocess.run(command, check=False).returncode)
    finally:
        subprocess.run(["ip", "netns", "delete", NAMESPACE], check=False)


if __name__ == "__main__":
    main()
