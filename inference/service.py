"""AI triage: studies that have gone quiet become jobs; each job runs one model on the
series its routing rule picks, and the result is stored in the study as DICOM.

Embedded (the default), all of it runs inside `pacs serve`: a dispatcher thread turns
quiet studies into jobs (from the outbox the store transaction wrote, so no study is
missed across restarts) and runner threads hand jobs to model processes. At scale
(``PACS_AI_BROKER``) the dispatcher sends job ids through Redis or RabbitMQ to `pacs worker`
processes on other machines, which run them the same way (:mod:`inference.queue`).

Either way a job is claimed in the index before it runs and its claim is renewed while it
runs, so a job whose worker died is taken by another; its result's UIDs derive from the
job, so a job run twice still leaves one result.
"""

import logging
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from inference.bundles import BundleInfo, check_weights, discover
from inference.config import InferenceSettings
from inference.errors import InferenceError, ModelRefused, NotApplicable, RoutingError
from inference.jobs import (
    LEASE,
    Job,
    claim_next,
    finish,
    queue_quiet_studies,
    release,
    renew,
    stale,
)
from inference.model_settings import SITE, resolve, rows
from inference.outcomes import ModelResult
from inference.routing import Routing, choose, read
from inference.runner import CLASSIFIER, HEAD_CT, RUNNERS, ModelPool, Task
from inference.studies import StudyFacts, series_blobs, study_facts
from inference.webhook import Webhook
from storage import Archive, Source, StorageError, stage_file
from storage.processes import process_identity

log = logging.getLogger(__name__)

SEVERITIES = ("critical", "urgent")
SWEEP_SECONDS = 30.0
"""How often the dispatcher looks for jobs no worker is on (queue mode)."""
RESEND_SECONDS = 300.0
"""The least time between two sendings of one job (queue mode)."""


@dataclass(frozen=True, slots=True)
class ActiveModel:
    info: BundleInfo
    runner: str
    default_on: bool
    severity: str
    """The severity of this model's flag: ``critical`` or ``urgent``."""


def available_models(models_dir: Path) -> dict[str, ActiveModel]:
    """The bundles under `models_dir` that may run: complete, pinned weights intact, with
    a runner this archive has. A bundle that may not is logged and left out."""
    found: dict[str, ActiveModel] = {}
    try:
        bundles = discover(models_dir)
    except ModelRefused as exc:
        log.error("AI models: %s", exc.reason)
        return found
    for info in bundles:
        runner = str(info.metadata.get("runner", CLASSIFIER))
        severity = str(info.metadata.get("severity", "urgent"))
        try:
            check_weights(info)
            if runner not in RUNNERS:
                raise ModelRefused(f"{info.name}: unknown runner {runner!r}")
            if severity not in SEVERITIES:
                raise ModelRefused(f"{info.name}: unknown severity {severity!r}")
        except ModelRefused as exc:
            log.error("AI model left out: %s", exc.reason)
            continue
        default_on = bool(info.metadata.get("default_enabled", True))
        found[info.name] = ActiveModel(info, runner, default_on, severity)
    return found


def models_on(archive: Archive, models: dict[str, ActiveModel], routing: Routing) -> list[str]:
    """The routed models that are on for the site or for at least one hospital."""
    stored = rows(archive)
    on = []
    for name in routing.models():
        model = models.get(name)
        if model is None:
            continue
        hospitals = {row.hospital for row in stored if row.model == name} | {SITE}
        if any(
            resolve(model.info, stored, code, default_on=model.default_on).enabled
            for code in hospitals
        ):
            on.append(name)
    return on


class Triage:
    """Runs jobs: route, run the model in a worker process, store its result, finish."""

    def __init__(
        self,
        archive: Archive,
        models: dict[str, ActiveModel],
        routing: Routing,
        pool: ModelPool,
        *,
        ensemble: int,
        owner: str,
    ) -> None:
        self._archive = archive
        self._models = models
        self._routing = routing
        self._pool = pool
        self._ensemble = ensemble
        self.owner = owner
        self.stopping = threading.Event()
        """Set when the worker stops: a run broken by it gives its job back, unfailed."""

    def run(self, job: Job) -> None:
        """Run `job` (claimed by this owner), renewing its claim meanwhile, and record how
        it ended. Errors of the model or the study fail or skip the job, not the caller."""
        stop = threading.Event()
        keeper = threading.Thread(
            target=self._keep_claim, args=(job, stop), name="lease", daemon=True
        )
        keeper.start()
        try:
            self._run(job)
        finally:
            stop.set()
            keeper.join()

    def _keep_claim(self, job: Job, stop: threading.Event) -> None:
        while not stop.wait(LEASE.total_seconds() / 3):
            try:
                if not renew(self._archive, job, self.owner):
                    log.warning("AI job %d is no longer ours", job.id)
                    return
            except StorageError as exc:
                log.warning("AI job %d: cannot renew its claim: %s", job.id, exc.reason)

    def _run(self, job: Job) -> None:
        model = self._models.get(job.model)
        facts = study_facts(self._archive, job.study_instance_uid)
        hospital = facts.hospital if facts else None
        values: dict[str, object] = {"hospital": hospital}
        if model is None or model.info.version != job.model_version:
            state, reason = "skipped", f"{job.model} {job.model_version} is not installed here"
            self._finish(job, state, reason=reason, **values)
            return
        info = model.info
        choice = resolve(
            info, rows(self._archive, info.name), hospital, default_on=model.default_on
        )
        values |= {
            "threshold": choice.threshold,
            "weights_sha256": info.weights_sha256,
            "finding": str(info.metadata.get("finding", info.name)),
        }
        try:
            if facts is None:
                raise NotApplicable("the study is no longer in the archive")
            if not choice.enabled:
                raise NotApplicable(f"{info.name} is off for hospital {hospital or '(none)'}")
            rule = self._routing.rule(info.name, hospital)
            if rule is None:
                raise NotApplicable(f"no routing rule sends studies to {info.name}")
            series = choose(rule, info.name, facts.series)
            values["series_instance_uid"] = series.series_instance_uid
            result = self._execute(job, model, facts, series.series_instance_uid, choice.threshold)
        except NotApplicable as exc:
            self._finish(job, "skipped", reason=exc.reason, **values)
            return
        except (InferenceError, StorageError) as exc:
            if self.stopping.is_set():
                self._release(job)
                return
            self._finish(job, "failed", reason=exc.reason, **values)
            return
        except Exception as exc:  # a model that breaks on one study fails that job only
            if self.stopping.is_set():  # the model processes were stopped under it
                self._release(job)
                return
            log.exception("AI job %d (study %s) failed", job.id, job.study_instance_uid)
            self._finish(job, "failed", reason=f"{type(exc).__name__}: {exc}", **values)
            return
        self._finish(
            job,
            "done",
            score=result.score,
            flagged=result.flagged,
            severity=model.severity if result.flagged else None,
            result_sop_instance_uid=result.result_sop_instance_uid,
            reason=result.detail,
            **values,
        )

    def _execute(
        self, job: Job, model: ActiveModel, study: StudyFacts, series: str, threshold: float
    ) -> ModelResult:
        blobs = series_blobs(self._archive, series)
        with ExitStack() as stack:
            sources = [stack.enter_context(self._archive.blob_file(key)) for key in blobs]
            out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ai-")))
            task = Task(
                bundle=model.info.path,
                runner=model.runner,
                series_instance_uid=series,
                sources=sources,
                threshold=threshold,
                out_dir=out,
                uid_key=[job.study_instance_uid, job.model, job.model_version, str(job.up_to_seq)],
                ensemble=self._ensemble if model.runner == HEAD_CT else 1,
            )
            result = self._pool.run(task)
            for path in result.files:
                staged = stage_file(path, self._archive.staging_dir)
                # Kept with the study's own patient record and hospital.
                source = Source("ai", hospital=study.hospital, issuer=study.issuer)
                self._archive.store(staged, source=source)
        return result

    def _release(self, job: Job) -> None:
        if release(self._archive, job):
            log.info("AI job %d given back to the queue: this worker is stopping", job.id)

    def _finish(self, job: Job, state: str, **values: object) -> None:
        if not finish(self._archive, job, state, **values):
            log.warning("AI job %d was taken over by another worker; its result stands", job.id)
            return
        score = values.get("score")
        log.info(
            "AI job %d, %s on study %s: %s%s",
            job.id,
            job.model,
            job.study_instance_uid,
            state,
            f", score {score:.4f}{' FLAGGED' if values.get('flagged') else ''}"
            if isinstance(score, float)
            else f" ({values.get('reason')})",
        )


def load_routing(settings: InferenceSettings) -> Routing:
    return read(settings.routing_path())


class InferenceService:
    """The AI triage of `pacs serve`: dispatcher, runners (embedded) or publisher (queue)."""

    def __init__(
        self,
        archive: Archive,
        settings: InferenceSettings,
        *,
        poll: float = 1.0,
        publish: Callable[[int], None] | None = None,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self._archive = archive
        self._settings = settings
        self._quiet = timedelta(seconds=settings.ai_quiet_seconds)
        self._poll = poll
        self._publish = publish
        self._on_stop = on_stop
        self._stop = threading.Event()
        self._new_jobs = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sent: dict[tuple[int, int], float] = {}
        """Queue mode: (job id, attempts) → when this process last sent it."""
        self._swept = 0.0
        self._pool: ModelPool | None = None
        self._triage: Triage | None = None
        self._models: dict[str, ActiveModel] = {}
        self._routing = Routing({})
        self._webhook = (
            Webhook(
                archive,
                settings.ai_webhook_url,
                severities=[s.strip() for s in settings.ai_webhook_severities.split(",")],
                attempts=settings.ai_webhook_attempts,
            )
            if settings.ai_webhook_url
            else None
        )

    def start(self) -> None:
        try:
            self._routing = load_routing(self._settings)
        except RoutingError as exc:
            log.error("AI triage is off: %s", exc.reason)
            return
        self._models = available_models(self._settings.models_dir)
        on = models_on(self._archive, self._models, self._routing)
        log.info(
            "AI triage on: %s%s",
            ", ".join(f"{self._models[n].info.name} {self._models[n].info.version}" for n in on)
            or "no model is on",
            f"; jobs go to the queue {self._settings.ai_queue}" if self._publish else "",
        )
        self._spawn(lambda: self._loop(self._dispatch, "dispatcher", self._stop), "ai-dispatch")
        if (webhook := self._webhook) is not None:  # its own thread: a slow receiver waits alone
            self._spawn(
                lambda: self._loop(lambda: webhook.deliver_due() > 0, "webhook", self._stop),
                "ai-webhook",
            )
        if self._publish is None:
            self._pool = ModelPool(
                workers=self._settings.ai_workers,
                timeout=self._settings.ai_job_timeout,
                threads=self._settings.ai_threads,
            )
            self._pool.warm(
                [
                    (model.info.path, model.runner, self._settings.ai_ct_ensemble)
                    for name, model in self._models.items()
                    if name in on
                ]
            )
            triage = self._triage = Triage(
                self._archive,
                self._models,
                self._routing,
                self._pool,
                ensemble=self._settings.ai_ct_ensemble,
                owner=process_identity(),
            )
            for number in range(self._settings.ai_workers):
                self._spawn(
                    lambda: self._loop(lambda: self._work(triage), "runner", self._new_jobs),
                    f"ai-{number}",
                )

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Stop: runs in progress are broken off and their jobs given back to the queue
        (another worker, or this one after a restart, runs them), never failed."""
        self._stop.set()
        self._new_jobs.set()
        if self._triage is not None:
            self._triage.stopping.set()
        if self._pool is not None:
            self._pool.close()
        for thread in self._threads:
            thread.join(timeout=30)
        if self._webhook is not None:
            self._webhook.close()
        if self._on_stop is not None:
            self._on_stop()

    def _loop(self, step: Callable[[], bool], name: str, wake: threading.Event) -> None:
        """Run `step` until stopped, waiting a poll (or until `wake` is set: the dispatcher
        made a job) after each that found nothing to do; an error is logged and waited
        out, never the end of the loop."""
        while not self._stop.is_set():
            try:
                if not step():
                    wake.wait(self._poll)
                    if wake is not self._stop:
                        wake.clear()
            except StorageError as exc:
                log.error("AI triage cannot reach the archive: %s", exc.reason)
                self._stop.wait(5)
            except Exception:  # the loop must outlive any one error
                log.exception("AI %s error; it goes on", name)
                self._stop.wait(5)

    def _dispatch(self) -> bool:
        """Make jobs of the studies gone quiet (and send them, in queue mode), send again
        those no worker is on, announce flags."""
        on = models_on(self._archive, self._models, self._routing)
        for name in on:
            info = self._models[name].info
            made = queue_quiet_studies(self._archive, name, info.version, self._quiet)
            if made:
                self._new_jobs.set()
            if self._publish is not None:
                for job_id in made:
                    self._publish(job_id)
                    self._sent[(job_id, 0)] = time.monotonic()
        if self._publish is not None and self._swept + SWEEP_SECONDS < time.monotonic():
            self._swept = time.monotonic()
            self._send_again(on)
        return False

    def _send_again(self, models: list[str]) -> None:
        """Send again the jobs no worker is on (a message lost with a broker restart or a
        crash of this process, a worker that died mid-job): each attempt of a job at most
        once per RESEND_SECONDS, so that a long backlog does not fill the queue with
        copies, while a job whose worker died is sent again at once."""
        assert self._publish is not None
        now, sent = time.monotonic(), self._sent
        waiting = stale(self._archive, models, older=timedelta(seconds=SWEEP_SECONDS))
        for job in waiting:
            key = (job.id, job.attempts)
            if now - sent.get(key, -RESEND_SECONDS) >= RESEND_SECONDS:
                log.info("AI job %d has no worker; sending it again", job.id)
                self._publish(job.id)
                sent[key] = now
        for key in [k for k, at in sent.items() if now - at > RESEND_SECONDS]:
            del sent[key]

    def _work(self, triage: Triage) -> bool:
        """Run the next job, if there is one."""
        on = models_on(self._archive, self._models, self._routing)
        job = claim_next(self._archive, on, triage.owner) if on else None
        if job is not None:
            triage.run(job)
        return job is not None
