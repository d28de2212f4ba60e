"""DICOMweb benchmark: Dalat PACS beside Orthanc's DICOMweb plugin, same CT, same client,
same run, inside a loopback-only network namespace.

A 500-slice head CT (512 x 512, 12 bits, a phantom with noise, so that it compresses like
a real one) is sent to both by `storescu`, then each server answers, in turn:

- QIDO-RS: the study list's query (`PatientName=NGUYEN*`, OHIF's includefield) and a
  study's series, 90 times each;
- series metadata (the call OHIF makes per series), 10 times after a first, cold call;
- the whole study by WADO-RS (`transfer-syntax=*`), 3 times: MB/s to the last byte;
- every frame, one request each as OHIF sends them: one connection in turn (latency), and
  six connections at once (what a browser opens; frames/s); the bytes they add up to,
  native and (Dalat only: Orthanc 1.10's plugin cannot transcode frames) JPEG-LS and
  JPEG 2000 lossless, first encoded then from the cache.

Then OHIF, served by Dalat PACS, opens a 100-slice CT over loopback shaped by `tc tbf` to
10 Mbit/s (a district hospital's link; the app's own files already cached by the
browser), with frames as stored and with frames as JPEG-LS: seconds to the first image
drawn and to the last frame received.

Dalat PACS is asked as a signed-in administrator (a token from POST /auth/token, or the
browser's session cookie after the sign-in page), with its rate limit out of the way;
Orthanc without authentication.

    sudo .venv/bin/python bench/dicomweb.py            # about 10 minutes
    sudo .venv/bin/python bench/dicomweb.py --quick    # 100 slices, fewer repetitions
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from common import ADMIN, PASSWORD, storescu
from dimse import Dalat, Orthanc, Server, _running
from generate import DATA
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

HERE = Path(__file__).resolve().parent
NAMESPACE = "dalatweb"
OHIF_FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"
JLS_FRAMES = "multipart/related; type=image/jls; transfer-syntax=1.2.840.10008.1.2.4.80"
J2K_FRAMES = "multipart/related; type=image/jp2; transfer-syntax=1.2.840.10008.1.2.4.90"
STUDY_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
OHIF_INCLUDE = "00081030,00080060,00080090,00100030"


class OrthancWeb(Orthanc):
    def config(self) -> dict[str, object]:
        return {
            **super().config(),
            "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
        }


def phantom(folder: Path, slices: int, size: int = 512) -> Path:
    """A head CT: skull ring, brain, ventricles, noise; CT numbers stored with -1024."""
    if folder.is_dir() and len(list(folder.iterdir())) == slices:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    study, series = generate_uid(), generate_uid()
    y, x = np.mgrid[:size, :size] - size / 2
    for number in range(slices):
        scale = 1 - abs(number - slices / 2) / slices
        outer = (x / (0.42 * size * scale)) ** 2 + (y / (0.48 * size * scale)) ** 2
        inner = (x / (0.39 * size * scale)) ** 2 + (y / (0.45 * size * scale)) ** 2
        ventricle = (x / (0.06 * size)) ** 2 + ((y + 0.05 * size) / (0.12 * size)) ** 2
        hu = np.full((size, size), -1000.0)
        hu[outer < 1] = 1200  # bone
        hu[inner < 1] = 35  # brain
        hu[(ventricle < 1) & (inner < 1)] = 5  # fluid
        hu += rng.normal(0, 6, hu.shape)
        stored = np.clip(hu + 1024, 0, 4095).astype("<u2")
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName, ds.PatientID = "Nguyễn^Văn Bình", "BENCH1"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
        ds.StudyDate, ds.StudyTime, ds.Modality = "20261130", "080000", "CT"
        ds.AccessionNumber, ds.StudyDescription = "BENCHWEB", "CT sọ não"
        ds.SeriesNumber, ds.InstanceNumber = 1, number + 1
        ds.ImagePositionPatient = [-128, -128, number * 1.0]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 1.0
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = 40, 80
        ds.PixelData = stored.tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(folder / f"{number:04d}.dcm", enforce_file_format=True)
    return folder


def _figures(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {
        "p50_ms": statistics.median(ms),
        "p95_ms": ms[max(0, int(len(ms) * 0.95) - 1)],
        "n": len(ms),
    }


def _timed(call: Callable[[], httpx.Response]) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = call()
    response.raise_for_status()
    return time.perf_counter() - started, response


def _instances(client: httpx.Client, root: str, study: str) -> list[tuple[str, str]]:
    found = client.get(f"{root}/studies/{study}/instances", params={"limit": "10000"}).json()
    return [(i["0020000E"]["Value"][0], i["00080018"]["Value"][0]) for i in found]


def measure(server: Server, repetitions: int) -> dict[str, object]:
    root = f"http://127.0.0.1:{server.http_port}/dicom-web"
    results: dict[str, object] = {}
    with httpx.Client(timeout=300, headers=server.headers) as client:
        (study_json,) = client.get(f"{root}/studies", params={"PatientID": "BENCH1"}).json()
        study = study_json["0020000D"]["Value"][0]
        instances = _instances(client, root, study)
        series = instances[0][0]

        def qido() -> httpx.Response:
            params = {"PatientName": "NGUYEN*", "includefield": OHIF_INCLUDE, "limit": "101"}
            return client.get(f"{root}/studies", params=params)

        results["qido_studies"] = _figures([_timed(qido)[0] for _ in range(repetitions * 3)])
        results["qido_series"] = _figures(
            [_timed(lambda: client.get(f"{root}/studies/{study}/series"))[0]
             for _ in range(repetitions * 3)]
        )  # fmt: skip
        metadata_url = f"{root}/studies/{study}/series/{series}/metadata"
        cold, response = _timed(lambda: client.get(metadata_url))
        results["metadata_cold_ms"] = cold * 1000
        results["metadata_bytes"] = len(response.content)
        results["metadata"] = _figures(
            [_timed(lambda: client.get(metadata_url))[0] for _ in range(max(3, repetitions // 3))]
        )
        rates = []
        for _ in range(3):
            started, size = time.perf_counter(), 0
            with client.stream(
                "GET", f"{root}/studies/{study}", headers={"Accept": STUDY_ACCEPT}
            ) as stream:
                stream.raise_for_status()
                for chunk in stream.iter_bytes(1 << 20):
                    size += len(chunk)
            rates.append(size / (time.perf_counter() - started) / 1e6)
        results["study_mb_s"] = statistics.median(rates)
        results["study_bytes"] = size
        results["frames"] = _frames(client, root, study, instances, OHIF_FRAMES)
        results["frames_6_connections_per_s"] = _parallel_frames(
            root, study, instances, server.headers
        )
        if isinstance(server, Dalat):
            for name, accept in (("jls", JLS_FRAMES), ("j2k", J2K_FRAMES)):
                results[f"frames_{name}_first"] = _frames(client, root, study, instances, accept)
                results[f"frames_{name}_cached"] = _frames(client, root, study, instances, accept)
    return results


def _frame_url(root: str, study: str, series: str, sop: str) -> str:
    return f"{root}/studies/{study}/series/{series}/instances/{sop}/frames/1"


def _frames(
    client: httpx.Client, root: str, study: str, instances: list[tuple[str, str]], accept: str
) -> dict[str, float]:
    times, size = [], 0
    for series, sop in instances:
        seconds, response = _timed(
            lambda s=series, o=sop: client.get(  # type: ignore[misc]
                _frame_url(root, study, s, o), headers={"Accept": accept}
            )
        )
        times.append(seconds)
        size += len(response.content)
    return {**_figures(times), "total_s": sum(times), "bytes": size}


def _parallel_frames(
    root: str, study: str, instances: list[tuple[str, str]], headers: dict[str, str]
) -> float:
    chunks = [instances[i::6] for i in range(6)]

    def fetch(part: list[tuple[str, str]]) -> None:
        with httpx.Client(timeout=300, headers=headers) as client:
            for series, sop in part:
                client.get(
                    _frame_url(root, study, series, sop), headers={"Accept": OHIF_FRAMES}
                ).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(fetch, chunks))
    return len(instances) / (time.perf_counter() - started)


# -- OHIF over a shaped link -----------------------------------------------------------------


def _shape(rate: str | None) -> None:
    subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], capture_output=True, check=False)
    if rate:
        subprocess.run(
            ["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", rate,
             "burst", "32kbit", "latency", "400ms"],
            check=True,
        )  # fmt: skip


def ohif_over_slow_link(folder: Path, slices: int) -> dict[str, dict[str, float]]:
    from playwright.sync_api import sync_playwright

    results: dict[str, dict[str, float]] = {}
    cases = {"as stored": None, "JPEG-LS lossless": "1.2.840.10008.1.2.4.80"}
    for name, syntax in cases.items():
        settings = {"PACS_VIEWER_TRANSFER_SYNTAX": syntax} if syntax else {}
        server = Dalat("dalat", "DALAT", 11412, 18412, settings=settings)
        with _running(server):
            storescu(server.aet, server.dicom_port, [folder])
            base = f"http://127.0.0.1:{server.http_port}"
            with httpx.Client(headers=server.headers) as client:
                (study,) = client.get(f"{base}/dicom-web/studies").json()
            uid = study["0020000D"]["Value"][0]
            with sync_playwright() as driver:
                browser = driver.chromium.launch(
                    executable_path="/usr/bin/chromium",
                    args=["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"],
                )
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.add_init_script('localStorage.setItem("shownTours", \'["basicViewerTour"]\')')
                # Signed in, and the app's files (the viewer's too) cached, as on a
                # radiologist's machine:
                _sign_in(page, f"{base}/viewer?StudyInstanceUIDs={uid}")
                page.wait_for_function(_LIT_CANVAS, timeout=300_000, polling=100)
                page.goto(f"{base}/", wait_until="networkidle")
                frames: list[float] = []
                sizes: list[int] = []
                page.on("requestfinished", _FrameLog(frames, sizes))
                _shape("10mbit")
                try:
                    started = time.perf_counter()
                    page.goto(f"{base}/viewer?StudyInstanceUIDs={uid}")
                    page.wait_for_function(_LIT_CANVAS, timeout=300_000, polling=100)
                    first_image = time.perf_counter() - started
                    deadline = time.monotonic() + 600
                    while len(frames) < slices and time.monotonic() < deadline:
                        page.wait_for_timeout(200)
                    all_frames = (frames[-1] if frames else time.perf_counter()) - started
                finally:
                    _shape(None)
                    browser.close()
            results[name] = {
                "first_image_s": first_image,
                "all_frames_s": all_frames,
                "frames": len(frames),
                "frame_bytes": sum(sizes),
            }
            print(f"  OHIF, 10 Mbit/s, {name}: {results[name]}", flush=True)
    return results


def _sign_in(page: Any, url: str) -> None:
    """Open `url` as a person would: the sign-in page first, then back where they were going
    (the session cookie then goes with every request of the app)."""
    page.goto(url, wait_until="domcontentloaded")
    if "/signin" not in page.url:
        raise RuntimeError(f"the viewer did not ask to sign in: {page.url}")
    page.get_by_label("User name").fill(ADMIN)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(url, wait_until="networkidle", timeout=60_000)


class _FrameLog:
    """Notes when each frame request finished and how many bytes it brought."""

    def __init__(self, finished: list[float], sizes: list[int]) -> None:
        self.finished, self.sizes = finished, sizes

    def __call__(self, request: Any) -> None:
        if "/frames/" in request.url:
            self.finished.append(time.perf_counter())
            self.sizes.append(int(request.sizes()["responseBodySize"]))


_LIT_CANVAS = """() => [...document.querySelectorAll('canvas')].some(c => {
    if (c.width < 256 || c.height < 256) return false;
    const probe = document.createElement('canvas');
    probe.width = c.width; probe.height = c.height;
    const ctx = probe.getContext('2d');
    ctx.drawImage(c, 0, 0);
    const data = ctx.getImageData(0, 0, c.width, c.height).data;
    let lit = 0;
    for (let i = 0; i < data.length; i += 4 * 97) if (data[i] > 128) lit++;
    return lit > 50;
})"""


# -- the run ------------------------------------------------------------------------------


def _table(results: dict[str, dict[str, object]]) -> str:
    dalat, orthanc = results["dalat"], results["orthanc"]

    def pair(key: str, field: str = "p95_ms", unit: str = "ms") -> str:
        ours, theirs = dalat[key], orthanc[key]
        a = ours[field] if isinstance(ours, dict) else ours
        b = theirs[field] if isinstance(theirs, dict) else theirs
        return f"{a:.1f} {unit} | {b:.1f} {unit} | {float(a) / float(b):.2f}"  # type: ignore[arg-type]

    lines = [
        "| Measure | Dalat PACS | Orthanc + DICOMweb | ratio |",
        "|---|---|---|---|",
        f"| QIDO-RS study list, p50 | {pair('qido_studies', 'p50_ms')} |",
        f"| QIDO-RS study list, p95 | {pair('qido_studies')} |",
        f"| QIDO-RS a study's series, p95 | {pair('qido_series')} |",
        f"| series metadata, first call | {pair('metadata_cold_ms', '', 'ms')} |",
        f"| series metadata, p50 | {pair('metadata', 'p50_ms')} |",
        f"| series metadata, p95 | {pair('metadata')} |",
        f"| whole study (WADO-RS), MB/s | {pair('study_mb_s', '', 'MB/s')} |",
        f"| one frame, p50 | {pair('frames', 'p50_ms')} |",
        f"| one frame, p95 | {pair('frames')} |",
        f"| frames/s, 6 connections | {pair('frames_6_connections_per_s', '', '/s')} |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-ohif", action="store_true", help="skip the shaped-link OHIF run")
    parser.add_argument("--only-ohif", action="store_true", help="only the shaped-link run")
    args = parser.parse_args()
    if not args.inside:
        _in_namespace(sys.argv[1:])
        return
    slices = 100 if args.quick else 500
    repetitions = 10 if args.quick else 30
    folder = phantom(DATA / f"dicomweb-ct-{slices}", slices)
    if args.only_ohif:
        small = phantom(DATA / "dicomweb-ct-100", 100)
        print(json.dumps(ohif_over_slow_link(small, 100), indent=2))
        return
    results: dict[str, dict[str, object]] = {}
    for server in (
        Dalat("dalat", "DALAT", 11412, 18412),
        OrthancWeb("orthanc", "ORTHANC", 4243, 8043),
    ):
        with _running(server):
            storescu(server.aet, server.dicom_port, [folder])
            time.sleep(3)  # let the ingest's background work (checkpoints, caches) settle
            results[server.name] = measure(server, repetitions)
            print(f"{server.name}: {json.dumps(results[server.name])}", flush=True)
    summary: dict[str, object] = {"slices": slices, **results, "table": _table(results)}
    if not args.no_ohif:
        small = phantom(DATA / "dicomweb-ct-100", 100)
        summary["ohif_10mbit"] = ohif_over_slow_link(small, 100)
    out = HERE / "results" / f"dicomweb-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"\n{summary['table']}\n\nresults: {out}")


def _in_namespace(arguments: list[str]) -> None:
    """Re-run this script in a fresh loopback-only network namespace (MTU 1500, so that
    shaping sees packets of a real link)."""
    subprocess.run(["ip", "netns", "delete", NAMESPACE], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", NAMESPACE], check=True)
    try:
        inside = ["ip", "netns", "exec", NAMESPACE]
        subprocess.run([*inside, "ip", "link", "set", "lo", "mtu", "1500", "up"], check=True)
        command = [*inside, sys.executable, __file__, "--inside", *arguments]
        sys.exit(subprocess.run(command, check=False).returncode)
    finally:
        subprocess.run(["ip", "netns", "delete", NAMESPACE], check=False)


if __name__ == "__main__":
    main()
