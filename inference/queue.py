"""AI jobs through a message broker, to `pacs worker` processes on other machines.

Dramatiq carries job ids over Redis (``redis://``) or RabbitMQ (``amqp://``). The index
stays the truth about a job: a worker claims the job in the index before running it (a
message for a job that is finished, or that a live worker holds, is dropped), renews the
claim while the model runs, and writes how it ended. Messages are acknowledged after the
run, so a worker killed mid-job leaves its message to be delivered to another; the
dispatcher also sends again any job that no live worker holds (a lost message, an expired
claim). Whichever way a job is run twice, its result's UIDs are the job's, so the study
gets one result.
"""

import logging
import threading
from collections.abc import Callable

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from inference.config import InferenceSettings
from inference.errors import QueueError, RoutingError
from inference.jobs import claim
from inference.runner import ModelPool
from inference.service import Triage, available_models, load_routing
from storage import Archive
from storage.processes import process_identity

log = logging.getLogger(__name__)

ACTOR = "run_ai_job"


def broker_for(url: str) -> dramatiq.Broker:
    """The Dramatiq broker for `url`: redis://... or amqp://..."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisBroker(url=url)  # type: ignore[no-untyped-call]
    if url.startswith(("amqp://", "amqps://")):
        return RabbitmqBroker(url=url)
    raise QueueError(f"PACS_AI_BROKER must be redis://... or amqp://..., not {url!r}")


class JobQueue:
    """The queue of AI job ids: `publish` on the archive's side, `handler` on a worker's."""

    def __init__(
        self,
        settings: InferenceSettings,
        handler: Callable[[int], None] | None = None,
    ) -> None:
        assert settings.ai_broker is not None
        self.broker = broker_for(settings.ai_broker)

        def run_ai_job(job_id: int) -> None:
            if handler is None:
                raise QueueError("this process only sends jobs")
            handler(job_id)

        self._actor = dramatiq.actor(
            broker=self.broker,
            actor_name=ACTOR,
            queue_name=settings.ai_queue,
            max_retries=5,
            min_backoff=5_000,
            time_limit=int((settings.ai_job_timeout + 300) * 1000),
        )(run_ai_job)

    def publish(self, job_id: int) -> None:
        self._actor.send(job_id)

    def close(self) -> None:
        self.broker.close()


def run_worker(archive: Archive, settings: InferenceSettings, stop: threading.Event) -> None:
    """Run jobs from the queue until `stop` is set (`pacs worker`)."""
    try:
        routing = load_routing(settings)
    except RoutingError as exc:
        raise QueueError(exc.reason) from None
    models = available_models(settings.models_dir)
    pool = ModelPool(
        workers=settings.ai_workers, timeout=settings.ai_job_timeout, threads=settings.ai_threads
    )
    triage = Triage(
        archive, models, routing, pool, ensemble=settings.ai_ct_ensemble, owner=process_identity()
    )

    def handle(job_id: int) -> None:
        job = claim(archive, job_id, triage.owner)
        if job is None:
            log.info("AI job %d is finished or held by a live worker; message dropped", job_id)
            return
        triage.run(job)

    queue = JobQueue(settings, handle)
    worker = dramatiq.Worker(
        queue.broker, queues={settings.ai_queue}, worker_threads=settings.ai_workers
    )
    worker.start()
    log.info(
        "AI worker %s on queue %s: %s",
        triage.owner,
        settings.ai_queue,
        ", ".join(f"{m.info.name} {m.info.version}" for m in models.values()) or "no model",
    )
    try:
        stop.wait()
    finally:
        triage.stopping.set()  # runs in progress give their jobs back, unfailed
        pool.close()
        worker.stop()
        queue.close()
