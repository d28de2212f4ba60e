"""The embedded inference worker: inside `pacs serve`, nothing else to start.

Every few seconds it turns studies that have gone quiet into jobs (from the outbox the
store transaction wrote, so no study is missed across restarts), takes the oldest job,
runs the chest X-ray model on the first chest radiograph of the study, and stores the
result as a DICOM SR in the same study through the archive's own ingest path. A study
with nothing for the model is skipped with the reason; a model that fails fails its job
with the reason; the next job goes on either way.
"""

import logging
import tempfile
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
from pydicom import dcmread

from inference.bundles import LoadedModel, load
from inference.cxr import model_input, source_image
from inference.errors import InferenceError, ModelRefused, NotApplicable
from inference.jobs import Job, claim_next, finish, queue_quiet_studies
from inference.results import derived_uid, triage_report
from storage import Archive, Level, Source, StorageError, build_query, stage_file
from storage.processes import process_identity

log = logging.getLogger(__name__)

CHEST_MODALITIES = ("CR", "DX")
CHEST_PARTS = ("", "CHEST", "THORAX")


@dataclass(frozen=True, slots=True)
class Outcome:
    state: str
    reason: str | None = None
    score: float | None = None
    flagged: bool | None = None
    series: str | None = None
    result: str | None = None


class InferenceService:
    def __init__(
        self, archive: Archive, models_dir: Path, *, quiet_seconds: float, poll: float = 1.0
    ) -> None:
        self._archive = archive
        self._bundle = models_dir / "cxr-pneumonia"
        self._quiet = timedelta(seconds=quiet_seconds)
        self._poll = poll
        self._owner = process_identity()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._model: LoadedModel | None = None

    def start(self) -> None:
        try:
            self._model = load(self._bundle)
        except ModelRefused as exc:
            log.error("AI triage is off: %s", exc.reason)
            return
        torch.set_num_threads(1)  # the archive's own work keeps the other cores
        log.info(
            "AI triage on: %s %s (threshold %.4f)",
            self._model.info.name,
            self._model.info.version,
            self._model.info.threshold,
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        assert self._model is not None
        info = self._model.info
        while not self._stop.is_set():
            try:
                queue_quiet_studies(self._archive, info.name, info.version, self._quiet)
                job = claim_next(self._archive, info.name, self._owner)
                if job is None:
                    self._stop.wait(self._poll)
                    continue
                self._finish(job, self._work(job))
            except StorageError as exc:
                log.error("AI triage cannot reach the archive: %s", exc.reason)
                self._stop.wait(5)
            except Exception:  # the worker must outlive any one job
                log.exception("AI triage worker error; it goes on")
                self._stop.wait(5)

    def _finish(self, job: Job, outcome: Outcome) -> None:
        assert self._model is not None
        info = self._model.info
        finish(
            self._archive,
            job,
            outcome.state,
            reason=outcome.reason,
            score=outcome.score,
            flagged=outcome.flagged,
            threshold=info.threshold,
            weights_sha256=info.weights_sha256,
            series_instance_uid=outcome.series,
            result_sop_instance_uid=outcome.result,
        )
        log.info(
            "AI triage of study %s: %s%s",
            job.study_instance_uid,
            outcome.state,
            f" ({outcome.reason})" if outcome.reason else f", score {outcome.score:.4f}",
        )

    def _work(self, job: Job) -> Outcome:
        try:
            return self._triage(job)
        except NotApplicable as exc:
            return Outcome("skipped", exc.reason)
        except (InferenceError, StorageError) as exc:
            return Outcome("failed", exc.reason)
        except Exception as exc:  # a model that crashes on one study fails that job only
            log.exception("AI triage of study %s failed", job.study_instance_uid)
            return Outcome("failed", f"{type(exc).__name__}: {exc}")

    def _triage(self, job: Job) -> Outcome:
        assert self._model is not None
        series = self._archive.find(
            build_query(Level.SERIES, {"StudyInstanceUID": job.study_instance_uid})
        )
        chest = [
            s
            for s in series
            if s.values.get("Modality") in CHEST_MODALITIES
            and str(s.values.get("BodyPartExamined") or "").upper() in CHEST_PARTS
        ]
        if not chest:
            found = sorted({str(s.values.get("Modality")) for s in series})
            raise NotApplicable(
                f"no chest radiograph (CR or DX of the chest) in the study: {', '.join(found)}"
            )
        chosen = chest[0].values["SeriesInstanceUID"]
        instances = self._archive.instance_details(
            build_query(Level.IMAGE, {"SeriesInstanceUID": chosen})
        )
        with self._archive.blob_file(instances[0].blob_key) as path:
            image = dcmread(path)
        try:
            pixels = source_image(image)
        except (ValueError, RuntimeError, NotImplementedError, TypeError) as exc:
            raise NotApplicable(f"the image cannot be read: {exc}") from None
        with torch.no_grad():
            logit = self._model.network(model_input(pixels[None]))
            score = float(torch.sigmoid(logit).item())
        threshold = self._model.info.threshold
        # The result's UIDs come from the job: a job run again (its worker killed after the
        # store, before its state was written) stores the same instance, not a second one.
        key = [job.study_instance_uid, job.model, job.model_version, str(job.up_to_seq)]
        report = triage_report(
            image,
            self._model.info,
            score=score,
            threshold=threshold,
            series_instance_uid=derived_uid(*key, "series"),
            sop_instance_uid=derived_uid(*key, "report"),
        )
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "report.dcm"
            report.save_as(path, enforce_file_format=True)
            staged = stage_file(path, self._archive.staging_dir)
        self._archive.store(staged, source=Source("ai", aet=None, hospital=None))
        return Outcome(
            "done",
            score=score,
            flagged=score >= threshold,
            series=chosen,
            result=str(report.SOPInstanceUID),
        )
