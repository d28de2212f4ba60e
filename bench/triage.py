"""AI triage benchmark: time from a study's last C-STORE to its flag, and studies per hour.

`pacs serve` runs with its embedded worker (quiet period 5 s, to keep the run short; the
figure that matters is the time beyond the quiet period).

Chest X-ray (the default): a pynetdicom SCU sends chest CRs made from the golden images in
tests/data (one study each), one at a time: the time from the C-STORE response to the SR
being visible by QIDO-RS, p50 and p95. Then 40 studies at once: studies per hour for the
one worker (from the first flag to the last, since the studies go quiet together).

Head CT (``--head-ct``): the experimental haemorrhage model is turned on, and 200-slice
head CTs (512 x 512, 0.45 mm pixels, 0.625 mm slices; synthetic heads of adult size, every
other one with a 65 HU bleed) are sent one at a time: the time from the last slice's
C-STORE response to the SR, with the ensemble of ``PACS_AI_CT_ENSEMBLE`` (3) models on
``--threads`` threads of one model process.

Peak memory is that of the serve process and its model processes together. The client
polls as a signed-in administrator (a token from POST /auth/token), with the rate limit out
of the way.

    .venv/bin/python bench/triage.py             # about 3 minutes
    .venv/bin/python bench/triage.py --quick
    .venv/bin/python bench/triage.py --head-ct   # about 10 minutes
"""

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from common import CLIENT_AET, SERVER_ENV, sign_in
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ComputedRadiographyImageStorage, CTImageStorage

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from tests.inference.phantoms import Bleed, head_ct  # noqa: E402 - the tests' phantoms
from tests.test_triage import chest_cr  # noqa: E402 - the tests' own CR maker

DICOM_PORT, HTTP_PORT = 11612, 18612
PACS = (sys.executable, "-m", "pacs")
QUIET = 5.0
GOLDEN = sorted(p.name for p in (ROOT / "tests" / "data" / "cxr-golden").glob("*.jpeg"))


def _send(folder: Path, count: int) -> list[tuple[str, float]]:
    """Send `count` one-image studies over one association; (study, acknowledged at)."""
    ae = AE(ae_title=CLIENT_AET)
    ae.add_requested_context(ComputedRadiographyImageStorage)
    assoc = ae.associate("127.0.0.1", DICOM_PORT, ae_title="DALAT")
    folder.mkdir(parents=True, exist_ok=True)
    sent = []
    try:
        for number in range(count):
            ds = chest_cr(GOLDEN[number % len(GOLDEN)])
            ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            path = folder / f"{number}.dcm"
            ds.save_as(path, enforce_file_format=True)
            status = assoc.send_c_store(path)
            if int(status.Status) != 0:
                raise RuntimeError(f"C-STORE failed: 0x{int(status.Status):04X}")
            sent.append((str(ds.StudyInstanceUID), time.perf_counter()))
    finally:
        assoc.release()
    return sent


def _send_head_ct(folder: Path, bleed: bool) -> tuple[str, float]:
    """Send one 200-slice head CT over one association; (study, last acknowledged at)."""
    series = head_ct(
        bleed=Bleed(centre_mm=(25.0, -10.0, 10.0), radius_mm=12.0) if bleed else None,
        rows=512,
        columns=512,
        slices=200,
        pixel_mm=0.45,
        slice_mm=0.625,
        brain_radii_mm=(70.0, 85.0, 60.0),
        skull_mm=6.0,
    )
    ae = AE(ae_title=CLIENT_AET)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", DICOM_PORT, ae_title="DALAT")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for ds in series:
            path = folder / f"{ds.InstanceNumber}.dcm"
            ds.save_as(path, enforce_file_format=True)
            status = assoc.send_c_store(path)
            if int(status.Status) != 0:
                raise RuntimeError(f"C-STORE failed: 0x{int(status.Status):04X}")
    finally:
        assoc.release()
    return str(series[0].StudyInstanceUID), time.perf_counter()


def _flagged_at(client: httpx.Client, studies: list[str], timeout: float) -> dict[str, float]:
    """When each study's SR became visible by QIDO-RS."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(studies) and time.monotonic() < deadline:
        for study in studies:
            if study in seen:
                continue
            url = f"http://127.0.0.1:{HTTP_PORT}/dicom-web/studies/{study}/series"
            response = client.get(url, params={"Modality": "SR"})
            response.raise_for_status()  # a refusal's JSON body is not a flag
            if response.json():
                seen[study] = time.perf_counter()
        time.sleep(0.05)
    return seen


def _peak_kib(pid: int) -> int:
    """The peak resident memory of `pid` and its descendants (summed; an upper bound)."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            total += int(line.split()[1])
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):  # it ended meanwhile
                total += _peak_kib(int(child))
    return total


def _job(client: httpx.Client, study: str) -> dict[str, object]:
    url = f"http://127.0.0.1:{HTTP_PORT}/api/ai/jobs"
    response = client.get(url, params={"study": study, "model": "blast-ct"})
    response.raise_for_status()
    jobs = response.json()
    return dict(jobs[0]) if jobs else {}


def head_ct_main(args: argparse.Namespace, workdir: Path, env: dict[str, str]) -> None:
    env = {**env, "PACS_AI_THREADS": str(args.threads), "PACS_AI_JOB_TIMEOUT": "1800"}
    enabled = subprocess.run(
        [*PACS, "model", "set", "blast-ct", "--hospital", "*", "--enable", "--by", "bench"],
        env=env,
        capture_output=True,
        text=True,
    )
    if enabled.returncode != 0:
        raise RuntimeError(enabled.stderr)
    log = (workdir / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "pacs", "serve"], env=env, stdout=log, stderr=log
    )
    runs = []
    try:
        with httpx.Client(timeout=30, headers=sign_in(env, HTTP_PORT)) as client:
            for number in range(1 if args.quick else 3):
                bleed = number % 2 == 1 or args.quick
                study, acknowledged = _send_head_ct(workdir / f"ct-{number}", bleed)
                flagged = _flagged_at(client, [study], timeout=1800)
                job = _job(client, study)
                runs.append(
                    {
                        "bleed": bleed,
                        "seconds": flagged[study] - acknowledged,
                        "state": job.get("state"),
                        "flagged": job.get("flagged"),
                        "haemorrhage_ml": job.get("score"),
                        "detail": job.get("reason"),
                    }
                )
                print(f"  head CT {number + 1}: {json.dumps(runs[-1])}", flush=True)
        peak = _peak_kib(server.pid)
    finally:
        server.terminate()
        server.wait(60)
        log.close()
    seconds = sorted(float(str(r["seconds"])) for r in runs)
    summary = {
        "quiet_seconds": QUIET,
        "ensemble": int(env.get("PACS_AI_CT_ENSEMBLE", "3")),
        "threads": args.threads,
        "p50_s": statistics.median(seconds),
        "max_s": seconds[-1],
        "peak_rss_mib": peak / 1024,
        "runs": runs,
    }
    out = HERE / "results" / f"triage-head-ct-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"results: {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--head-ct", action="store_true", help="the head-CT model instead")
    parser.add_argument("--threads", type=int, default=2, help="head CT: model threads")
    args = parser.parse_args()
    singles, batch = (5, 10) if args.quick else (20, 40)
    workdir = Path(tempfile.mkdtemp(prefix="bench-triage-"))
    env = {
        **SERVER_ENV,
        "PACS_DATA_DIR": str(workdir / "archive"),
        "PACS_LOG_LEVEL": "WARNING",
        "PACS_DICOM_PORT": str(DICOM_PORT),
        "PACS_HTTP_PORT": str(HTTP_PORT),
        "PACS_ACCEPT_ANY_CALLER": "true",
        "PACS_AI_QUIET_SECONDS": str(QUIET),
    }
    if args.head_ct:
        head_ct_main(args, workdir, env)
        return
    log = (workdir / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "pacs", "serve"], env=env, stdout=log, stderr=log
    )
    try:
        headers = sign_in(env, HTTP_PORT)
        latencies = []
        with httpx.Client(timeout=30, headers=headers) as client:
            for number in range(singles):
                ((study, acknowledged),) = _send(workdir / f"one-{number}", 1)
                flagged = _flagged_at(client, [study], timeout=120)
                latencies.append(flagged[study] - acknowledged)
                print(f"  study {number + 1}: flagged after {latencies[-1]:.2f} s", flush=True)
            many = _send(workdir / "many", batch)
            started = many[0][1]
            flagged = _flagged_at(client, [s for s, _ in many], timeout=900)
        first, finished = min(flagged.values()), max(flagged.values())
        # the worker's own rate: from the first flag to the last (the batch went quiet at once)
        per_hour = (len(flagged) - 1) / (finished - first) * 3600
        all_within = finished - started
        peak = _peak_kib(server.pid)
    finally:
        server.terminate()
        server.wait(60)
        log.close()
    latencies.sort()
    summary = {
        "quiet_seconds": QUIET,
        "p50_s": statistics.median(latencies),
        "p95_s": latencies[max(0, int(len(latencies) * 0.95) - 1)],
        "beyond_quiet_p95_s": latencies[max(0, int(len(latencies) * 0.95) - 1)] - QUIET,
        "studies_per_hour": per_hour,
        "batch": batch,
        "batch_flagged": len(flagged),
        "batch_all_flagged_after_s": all_within,
        "peak_rss_mib": peak / 1024,
        "latencies_s": latencies,
    }
    out = HERE / "results" / f"triage-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "latencies_s"}, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
