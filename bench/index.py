"""Index benchmark: C-FIND latency on PostgreSQL holding 1,000,000 instances of 100,000 studies.

The index is filled directly (PostgreSQL COPY), as `pacs serve` would have written it after
receiving the studies, with the archive's own name keys: 60,000 patients with Vietnamese
names (family names in their real proportions, 10 middle and 41 given names), 100,000
studies over two years (70 % X-ray studies of one series of two images, 30 % CT studies
of three series, 29 images in all), and a compressed header of 600 bytes per instance.
Then `pacs serve` runs on it, and DCMTK `findscu` asks, 50 times each, the questions a
radiologist or a RIS asks; p50 and p95 of each `findscu` process (about 35 ms of which is
DCMTK loading its dictionary). The same questions then go as QIDO-RS requests, as a viewer
sends them (one kept-alive HTTP connection, the study list's includefield), timed from
request to the last byte of the JSON answer, as a signed-in administrator (a token from
POST /auth/token) with the rate limit out of the way.

    .venv/bin/python bench/index.py                      # the test database on 127.0.0.1
    .venv/bin/python bench/index.py --database URL       # another PostgreSQL
    .venv/bin/python bench/index.py --keep               # keep the filled schema afterwards
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
from common import ENV, SERVER_ENV, sign_in
from generate import FAMILY

from storage import Archive, StorageSettings
from storage.names import folded_key, upper_key

HERE = Path(__file__).resolve().parent
DATABASE = "postgresql://postgres@127.0.0.1:5432/test"
SCHEMA = "bench_index"
DICOM_PORT, HTTP_PORT = 11512, 18512
PATIENTS, STUDIES = 60_000, 100_000
MIDDLE = ["Thị", "Văn", "Ngọc", "Minh", "Đức", "Quốc", "Thu", "Thanh", "Hữu", "Xuân"]
GIVEN = [
    "An",
    "Anh",
    "Bảo",
    "Bình",
    "Chi",
    "Cường",
    "Dũng",
    "Dung",
    "Duy",
    "Giang",
    "Hà",
    "Hải",
    "Hằng",
    "Hạnh",
    "Hiếu",
    "Hoa",
    "Hùng",
    "Hương",
    "Huy",
    "Khánh",
    "Lan",
    "Linh",
    "Long",
    "Mai",
    "Minh",
    "Nam",
    "Nga",
    "Ngân",
    "Nhung",
    "Phong",
    "Phúc",
    "Phương",
    "Quân",
    "Quang",
    "Sơn",
    "Tâm",
    "Thảo",
    "Thắng",
    "Trang",
    "Tuấn",
    "Vy",
]


def fill(database: str) -> dict[str, int]:
    """Create the schema with the archive's migrations, then COPY the rows in."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
    url = f"postgresql+psycopg://{database.split('://', 1)[1]}?options=-csearch_path%3D{SCHEMA}"
    with tempfile.TemporaryDirectory() as data:
        Archive.open(StorageSettings(data_dir=Path(data), database_url=url, _env_file=None)).close()
    rng = random.Random(11)
    families = [name for name, weight in FAMILY for _ in range(weight)]
    now = datetime.now(UTC)
    header = zlib.compress(os.urandom(300) + bytes(900), 1)[:600]
    counts = {"patients": 0, "studies": 0, "series": 0, "instances": 0}
    with psycopg.connect(database, options=f"-csearch_path={SCHEMA}") as conn:
        patients = []
        with conn.cursor().copy(
            "COPY patients (id, issuer, patient_id, patient_name, patient_name_upper, "
            "patient_name_folded, birth_date, sex, num_studies, num_series, num_instances, "
            "created_at) FROM STDIN"
        ) as copy:
            for pk in range(1, PATIENTS + 1):
                name = f"{rng.choice(families)}^{rng.choice(MIDDLE)} {rng.choice(GIVEN)}"
                patients.append(pk)
                birth = f"{rng.randrange(1930, 2020)}{rng.randrange(1, 13):02d}01"
                row = (pk, "BVDKLD", f"P{pk:07d}", name, upper_key(name), folded_key(name))
                copy.write_row((*row, birth, rng.choice("FM"), 0, 0, 0, now))
        counts["patients"] = PATIENTS
        series_pk = instance_pk = 0
        with (
            conn.cursor().copy(
                "COPY studies (id, patient_pk, study_instance_uid, study_date, study_time, "
                "accession_number, modalities_in_study, num_series, num_instances, hospital, "
                "created_at, updated_at) FROM STDIN"
            ) as studies,
        ):
            plans = []
            for pk in range(1, STUDIES + 1):
                ct = rng.random() < 0.3
                day = rng.randrange(730)
                date = f"{2024 + day // 365}{1 + (day % 365) // 31:02d}{1 + (day % 31) % 28:02d}"
                series = [10, 10, 9] if ct else [2]
                plans.append((pk, ct, date, series))
                studies.write_row(
                    (
                        pk,
                        rng.choice(patients),
                        f"2.25.{uuid.uuid4().int}",
                        date,
                        f"{rng.randrange(7, 18):02d}{rng.randrange(60):02d}00",
                        f"A{pk:08d}",
                        "CT" if ct else "DX",
                        len(series),
                        sum(series),
                        "BVDKLD",
                        now,
                        now,
                    )
                )
        counts["studies"] = STUDIES
        with conn.cursor().copy(
            "COPY series (id, study_pk, series_instance_uid, modality, series_number, "
            "num_instances, created_at) FROM STDIN"
        ) as copy:
            series_rows = []
            for study_pk, ct, _, sizes in plans:
                for number, size in enumerate(sizes, 1):
                    series_pk += 1
                    series_rows.append((series_pk, size, ct))
                    modality = "CT" if ct else "DX"
                    row = (series_pk, study_pk, f"2.25.{uuid.uuid4().int}", modality, number)
                    copy.write_row((*row, size, now))
        counts["series"] = series_pk
        with conn.cursor().copy(
            "COPY instances (id, series_pk, sop_instance_uid, sop_class_uid, instance_number, "
            "transfer_syntax_uid, size, sha256, blob_key, header, source_aet, received_at) "
            "FROM STDIN"
        ) as copy:
            for pk, size, ct in series_rows:
                sop_class = "1.2.840.10008.5.1.4.1.1.2" if ct else "1.2.840.10008.5.1.4.1.1.1.1"
                for number in range(1, size + 1):
                    instance_pk += 1
                    copy.write_row(
                        (
                            instance_pk,
                            pk,
                            f"2.25.{uuid.uuid4().int}",
                            sop_class,
                            number,
                            "1.2.840.10008.1.2.1",
                            525_000 if ct else 10_000_000,
                            "0" * 64,
                            uuid.uuid4().hex,
                            header,
                            "CT1" if ct else "DX1",
                            now,
                        )
                    )
        counts["instances"] = instance_pk
        for table in ("patients", "studies", "series", "instances"):
            conn.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s, false)",
                (table, counts[table] + 1),
            )
        conn.commit()
    with psycopg.connect(database, autocommit=True, options=f"-csearch_path={SCHEMA}") as conn:
        conn.execute("VACUUM ANALYZE")
    return counts


QUERIES = {
    "PatientID": ["-k", "PatientID={patient_id}"],
    "PatientName NGUYEN^THI HA*": ["-k", "PatientName=NGUYEN^THI HA*"],
    "StudyDate one day": ["-k", "StudyDate=20250312"],
    "StudyDate one week, CT": ["-k", "StudyDate=20250310-20250316", "-k", "ModalitiesInStudy=CT"],
    "AccessionNumber": ["-k", "AccessionNumber=A00054321"],
}


QIDO = {
    "PatientID": {"PatientID": "{patient_id}"},
    "PatientName NGUYEN^THI HA*": {"PatientName": "NGUYEN^THI HA*"},
    "StudyDate one day": {"StudyDate": "20250312"},
    "StudyDate one week, CT": {"StudyDate": "20250310-20250316", "ModalitiesInStudy": "CT"},
    "AccessionNumber": {"AccessionNumber": "A00054321"},
}
OHIF_INCLUDE = "00081030,00080060,00080090,00100030"


def _qido(client: httpx.Client, params: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    response = client.get(
        f"http://127.0.0.1:{HTTP_PORT}/dicom-web/studies",
        params={**params, "includefield": OHIF_INCLUDE},
        headers={"Accept": "application/dicom+json"},
    )
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed, len(response.json())


def _figures(times: list[float], matches: int) -> dict[str, float]:
    times = sorted(t * 1000 for t in times)
    return {
        "p50_ms": statistics.median(times),
        "p95_ms": times[int(len(times) * 0.95) - 1],
        "matches": matches,
    }


def _findscu(keys: list[str]) -> tuple[float, int]:
    command = [
        "findscu", "-S", "-aet", "BENCH", "-aec", "DALAT",
        "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-k", "PatientName",
        "-k", "StudyDate", "-k", "NumberOfStudyRelatedInstances",
        *keys, "127.0.0.1", str(DICOM_PORT),
    ]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"findscu failed: {result.stderr[-500:]}")
    return elapsed, (result.stderr + result.stdout).count("Find Response:")


def _a_patient_with_studies(database: str) -> str:
    with psycopg.connect(database, options=f"-csearch_path={SCHEMA}") as conn:
        row = conn.execute(
            "SELECT p.patient_id FROM patients p JOIN studies s ON s.patient_pk = p.id "
            "WHERE s.id = 4242"
        ).fetchone()
    assert row is not None
    return str(row[0])


def query(database: str, repetitions: int) -> dict[str, dict[str, float]]:
    patient_id = _a_patient_with_studies(database)
    url = f"postgresql+psycopg://{database.split('://', 1)[1]}?options=-csearch_path%3D{SCHEMA}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-index-"))
    env = {
        **SERVER_ENV,
        "PACS_DATA_DIR": str(workdir),
        "PACS_DATABASE_URL": url,
        "PACS_LOG_LEVEL": "WARNING",
        "PACS_AI_ENABLED": "false",  # the archive's own work alone
        "PACS_DICOM_PORT": str(DICOM_PORT),
        "PACS_HTTP_PORT": str(HTTP_PORT),
        "PACS_ACCEPT_ANY_CALLER": "true",
    }
    log = (workdir / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "pacs", "serve"], env=env, stdout=log, stderr=log
    )
    results: dict[str, dict[str, float]] = {}
    try:
        headers = sign_in(env, HTTP_PORT)
        for name, template in QUERIES.items():
            keys = [key.format(patient_id=patient_id) for key in template]
            _findscu(keys)  # warm the caches once
            times, matches = [], 0
            for _ in range(repetitions):
                seconds, matches = _findscu(keys)
                times.append(seconds)
            results[f"C-FIND {name}"] = figures = _figures(times, matches)
            print(
                f"  C-FIND {name}: p50 {figures['p50_ms']:.0f} ms, "
                f"p95 {figures['p95_ms']:.0f} ms ({matches} matches)",
                flush=True,
            )
        with httpx.Client(timeout=60, headers=headers) as client:
            for name, template in QIDO.items():
                params = {k: v.format(patient_id=patient_id) for k, v in template.items()}
                _qido(client, params)
                times, matches = [], 0
                for _ in range(repetitions):
                    seconds, matches = _qido(client, params)
                    times.append(seconds)
                results[f"QIDO-RS {name}"] = figures = _figures(times, matches)
                print(
                    f"  QIDO-RS {name}: p50 {figures['p50_ms']:.1f} ms, "
                    f"p95 {figures['p95_ms']:.1f} ms ({matches} matches)",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", default=DATABASE)
    parser.add_argument("--repetitions", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="keep the filled schema")
    parser.add_argument("--reuse", action="store_true", help="query a schema kept before")
    args = parser.parse_args()
    started = time.perf_counter()
    counts = {} if args.reuse else fill(args.database)
    print(f"filled {counts} in {time.perf_counter() - started:.0f} s", flush=True)
    try:
        results = query(args.database, args.repetitions)
    finally:
        if not args.keep:
            with psycopg.connect(args.database, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    lines = [
        "| Study-level query | matches | C-FIND p50 | C-FIND p95 | QIDO-RS p50 | QIDO-RS p95 |",
        "|---|---|---|---|---|---|",
    ]
    for name in QUERIES:
        find, qido = results[f"C-FIND {name}"], results[f"QIDO-RS {name}"]
        lines.append(
            f"| {name} | {find['matches']:.0f} | {find['p50_ms']:.0f} ms "
            f"| {find['p95_ms']:.0f} ms | {qido['p50_ms']:.0f} ms | {qido['p95_ms']:.0f} ms |"
        )
    table = "\n".join(lines)
    out = HERE / "results" / f"index-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"counts": counts, "results": results, "table": table}, indent=2))
    print(f"\n{table}\n\nresults: {out}")


if __name__ == "__main__":
    main()
