"""The clients of the load test (tests/reliability/test_load.py), each a process of its own
so that no one interpreter's GIL paces them:

- ``pynetdicom``: a modality that sends one small study per association, with pynetdicom,
  from a source address of its own (as a real modality has), timing each C-STORE;
- ``storescu``: a modality that sends one small study per run of DCMTK's ``storescu`` (one
  association), reading the status of each C-STORE from its verbose output;
- ``viewer``: a radiologist's OHIF, making the DICOMweb requests OHIF makes to open a study
  (see /work/shared/notes/ohif-dicomweb.md), study after study, timing each.

Run as ``python -m tests.reliability.load_clients CONFIG.json``. A client prints ``ready``
once set up, waits for a line on its standard input (the start), works for the config's
``seconds`` from then, finishes what it was doing, and writes what it did to the config's
``out`` file as JSON: the modalities every instance sent with its status, the viewers every
request with its status and latency. Imports are kept to what the role needs (no archive
code): a client costs the machine as little as a real one would.
"""

import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TIMEOUT = 30
"""Seconds a modality waits for an answer (association, C-STORE response) before it gives
up and aborts: a common setting of real modalities."""
LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)
"""A-ASSOCIATE-RJ (result, source, diagnostic) of a peer at its association limit."""


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    role = config["role"]
    work: dict[str, type[Modality | Viewer]]
    work = {"pynetdicom": PynetdicomModality, "storescu": StorescuModality, "viewer": Viewer}
    client = work[role](config)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()  # the start
    set_up = cpu_seconds()
    deadline = time.monotonic() + config["seconds"]
    client.run(deadline)
    result = client.result()
    result["cpu_seconds"] = cpu_seconds() - set_up
    Path(config["out"]).write_text(json.dumps(result))


def cpu_seconds() -> float:
    """CPU time used by this process and its children (storescu's runs) so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# -- modalities ---------------------------------------------------------------------------


class Modality:
    """Makes small CT and CR studies with fresh UIDs (tests/factories.py), one at a time."""

    def __init__(self, config: dict[str, Any]) -> None:
        from tests import factories

        self.factories = factories
        self.config = config
        self.rng = random.Random(config["seed"])
        self.folder = Path(config["folder"])
        self.stores: list[list[Any]] = []
        """[SOP Instance UID, Study Instance UID, status or None, seconds or None, bytes,
        time.time() sent (of the association, for storescu)]"""
        self.associations: list[list[Any]] = []
        """[outcome, seconds, detail, time.time() begun]; outcome: released, limit (refused
        by a configured limit), rejected, aborted or failed."""

    def study(self) -> tuple[str, list[Path]]:
        """A CT series of 3-8 slices of 128x128, or a CR study of 1-2 images of 256x256: its
        Study Instance UID and files."""
        rng, factories = self.rng, self.factories
        patient = {
            "patient_id": f"P{rng.randrange(500):04d}",
            "accession": f"A{rng.getrandbits(40)}",
        }
        if rng.random() < 0.7:
            datasets = factories.ct_series(rng.randint(3, 8), rows=128, columns=128, **patient)
        else:
            first = factories.chest_cr(rows=256, columns=256, **patient)
            datasets = [first]
            if rng.random() < 0.5:  # a lateral view
                second = factories.chest_cr(
                    rows=256, columns=256, study_uid=first.StudyInstanceUID, **patient
                )
                second.InstanceNumber = 2
                datasets.append(second)
        shutil.rmtree(self.folder, ignore_errors=True)  # the study sent before
        return str(datasets[0].StudyInstanceUID), factories.write_all(datasets, self.folder)

    def run(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            self.send(*self.study())

    def send(self, study: str, paths: list[Path]) -> None:
        """Send one study on one association, keeping what happened to each instance."""
        raise NotImplementedError

    def result(self) -> dict[str, Any]:
        return {"stores": self.stores, "associations": self.associations}


class PynetdicomModality(Modality):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        from pynetdicom import AE, _config, evt
        from pynetdicom.sop_class import (  # type: ignore[attr-defined]
            ComputedRadiographyImageStorage,
            CTImageStorage,
        )

        _config.STORE_SEND_CHUNKED_DATASET = True  # straight from the file, not decoded
        self.evt = evt
        self.ae = AE(ae_title=config["aet"])
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = TIMEOUT
        for sop_class in (CTImageStorage, ComputedRadiographyImageStorage):
            self.ae.add_requested_context(sop_class, "1.2.840.10008.1.2.1")

    def send(self, study: str, paths: list[Path]) -> None:
        config = self.config
        answers: list[Any] = []
        begun, started = time.time(), time.perf_counter()
        assoc = self.ae.associate(
            "127.0.0.1",
            config["port"],
            ae_title=config["called"],
            bind_address=(config["bind"], 0),
            evt_handlers=[(self.evt.EVT_ACSE_RECV, lambda event: answers.append(event.primitive))],
        )
        if not assoc.is_established:
            outcome, detail = "failed", "no association"
            rejections = [a for a in answers if getattr(a, "result", None) in (0x01, 0x02)]
            if assoc.is_rejected and rejections:
                rejection = rejections[0]
                how = (rejection.result, rejection.result_source, rejection.diagnostic)
                outcome = "limit" if how == LOCAL_LIMIT_EXCEEDED else "rejected"
                detail = f"A-ASSOCIATE-RJ {how}"
            elif assoc.is_aborted:
                outcome, detail = "aborted", "aborted before acceptance"
            self.associations.append([outcome, time.perf_counter() - started, detail, begun])
            for path in paths:
                self.stores.append([path.stem, study, None, None, path.stat().st_size, begun])
            return
        for path in paths:
            at, sent = time.time(), time.perf_counter()
            response = assoc.send_c_store(path) if established(assoc) else None
            seconds = time.perf_counter() - sent
            status = int(response.Status) if response and "Status" in response else None
            answered = seconds if status is not None else None
            self.stores.append([path.stem, study, status, answered, path.stat().st_size, at])
        if established(assoc):
            assoc.release()
            outcome, detail = "released", ""
        else:
            outcome, detail = "aborted", "aborted while storing"
        self.associations.append([outcome, time.perf_counter() - started, detail, begun])


def established(assoc: Any) -> bool:
    """Whether the association still stands (the peer may abort it at any time)."""
    return bool(assoc.is_established)


class StorescuModality(Modality):
    SENDING = re.compile(r"Sending file: (.+)$")
    RESPONSE = re.compile(r"Received Store Response \(([^)]*)\)")

    def send(self, study: str, paths: list[Path]) -> None:
        config = self.config
        command = [
            config["storescu"],
            "-v",
            "-aet",
            config["aet"],
            "-aec",
            config["called"],
            "-to",
            str(TIMEOUT),
            "-ta",
            str(TIMEOUT),
            "-td",
            str(TIMEOUT),
            "127.0.0.1",
            str(config["port"]),
            *map(str, paths),
        ]
        at, started = time.time(), time.perf_counter()
        run = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env={**os.environ, "TCP_NODELAY": "1"},
            timeout=300,
            check=False,
        )
        seconds = time.perf_counter() - started
        output = run.stdout + run.stderr
        statuses = self.statuses(output)
        for path in paths:
            status = statuses.get(path.stem)
            self.stores.append([path.stem, study, status, None, path.stat().st_size, at])
        if "Association Accepted" not in output:
            limit = "Local Limit Exceeded" in output
            outcome = (
                "limit" if limit else "rejected" if "Association Rejected" in output else "failed"
            )
            self.associations.append([outcome, seconds, output[-500:], at])
        elif run.returncode != 0 or "Releasing Association" not in output:
            self.associations.append(["aborted", seconds, output[-500:], at])
        else:
            self.associations.append(["released", seconds, "", at])

    def statuses(self, output: str) -> dict[str, int]:
        """SOP Instance UID (the file's name) → C-STORE status, from storescu -v."""
        statuses: dict[str, int] = {}
        current: str | None = None
        for line in output.splitlines():
            if sending := self.SENDING.search(line):
                current = Path(sending.group(1).strip()).stem
            elif (response := self.RESPONSE.search(line)) and current is not None:
                text = response.group(1)
                code = re.search(r"0x([0-9a-fA-F]{4})", text)
                if text == "Success":
                    statuses[current] = 0
                else:  # "Warning: ...", "Refused: OutOfResources [0xA700...]"...
                    statuses[current] = int(code.group(1), 16) if code else 0xFFFF
                current = None
        return statuses


# -- viewers ------------------------------------------------------------------------------

STUDY_LIST = {
    "limit": "101",
    "offset": "0",
    "fuzzymatching": "false",
    "includefield": "00081030,00080060,00080090,00100030",
}
JSON = "application/dicom+json"
FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"
INSTANCES = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


class Viewer:
    """OHIF opening one study after another: the study list, a row expanded, the viewer's
    checks and priors, the series list, each series' metadata and every frame of it; now
    and then a thumbnail, a rendered image, or (as Weasis does) the whole series."""

    def __init__(self, config: dict[str, Any]) -> None:
        import httpx

        self.httpx = httpx
        self.rng = random.Random(config["seed"])
        self.client = httpx.Client(base_url=config["base"], headers=config["headers"], timeout=120)
        self.requests: list[list[Any]] = []
        """[kind, HTTP status or None (transport error), seconds, bytes, time.time() sent]"""
        self.errors: list[str] = []
        self.studies_opened = 0
        self.empty_lists = 0

    def get(self, kind: str, path: str, accept: str, **params: str) -> Any:
        """The response's body (JSON decoded for DICOM JSON) if 200, else None, recorded."""
        at, started = time.time(), time.perf_counter()
        try:
            response = self.client.get(path, params=params, headers={"Accept": accept})
        except self.httpx.TransportError as exc:
            self.requests.append([kind, None, time.perf_counter() - started, 0, at])
            self.errors.append(f"{kind} {path}: {exc!r}")
            return None
        seconds = time.perf_counter() - started
        self.requests.append([kind, response.status_code, seconds, len(response.content), at])
        if response.status_code == 204 and accept == JSON:
            return []
        if response.status_code != 200:
            self.errors.append(f"{kind} {path}: {response.status_code} {response.text[:300]}")
            return None
        content_type = response.headers.get("content-type", "")
        expected = {JSON: "application/dicom+json", FRAMES: "multipart/related"}.get(accept)
        if expected and not content_type.startswith(expected):
            self.errors.append(f"{kind} {path}: 200 as {content_type}, not {expected}")
            return None
        return response.json() if accept == JSON else response.content

    def run(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            self.open_study()

    def open_study(self) -> None:
        rng = self.rng
        filters = {"ModalitiesInStudy": rng.choice(["CT", "CR"])} if rng.random() < 0.3 else {}
        studies = self.get("QIDO studies", "/studies", JSON, **STUDY_LIST, **filters)
        if not studies:
            if studies == []:
                self.empty_lists += 1
            time.sleep(0.2)
            return
        study = rng.choice(studies)
        uid, patient_id = value(study, "0020000D"), value(study, "00100020")
        base = f"/studies/{uid}"
        self.get("QIDO series", f"{base}/series", JSON, includefield="0008103E,00080021")
        for _ in range(2):  # the viewer checks the study exists, then lists it in its panel
            self.get("QIDO studies", "/studies", JSON, **STUDY_LIST, StudyInstanceUID=uid)
        self.get("QIDO studies", "/studies", JSON, **STUDY_LIST, **{"00100020": patient_id})
        series_list = self.get(
            "QIDO series",
            f"{base}/series",
            JSON,
            includefield="00080021,00080031,0008103E,00200011",
        )
        self.studies_opened += 1
        for series in series_list or []:
            path = f"{base}/series/{value(series, '0020000E')}"
            metadata = self.get("series metadata", f"{path}/metadata", JSON) or []
            sops = [value(instance, "00080018") for instance in metadata]
            extra = self.studies_opened % 4
            if extra == 2:  # Weasis: the whole series
                self.get("series (WADO-RS)", path, INSTANCES)
            else:  # OHIF prefetches every frame of the series
                for sop in sops:
                    self.get("frame", f"{path}/instances/{sop}/frames/1", FRAMES)
            if extra == 1:
                self.get("thumbnail", f"{path}/thumbnail", "image/jpeg", viewport="256,256")
            elif extra == 3 and sops:
                sop = sops[len(sops) // 2]
                self.get("rendered", f"{path}/instances/{sop}/rendered", "image/jpeg")

    def result(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors[:20],
            "studies_opened": self.studies_opened,
            "empty_lists": self.empty_lists,
        }


if __name__ == "__main__":
    main()
