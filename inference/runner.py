"""Models run in worker processes, each run with a time limit.

A model that hangs on one study (a pathological volume, a deadlock in a native library)
or crashes its process (a segmentation fault in a codec) must fail that job and nothing
else. So the service never runs a model in its own process: it hands a :class:`Task` (the
bundle, the files of the series, the threshold, where to write the result) to a pool of
worker processes (pebble). A run past its time limit has its process killed and replaced;
a process that dies is replaced; either way the job fails with the reason and the next
job goes on. Each worker loads a bundle once and keeps it for the jobs after.
"""

import logging
import multiprocessing
import threading
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pebble import ProcessExpired, ProcessPool

from inference.errors import InferenceError, ModelCrashed, ModelTimedOut
from inference.outcomes import ModelResult

log = logging.getLogger(__name__)

CLASSIFIER = "image-classifier"
HEAD_CT = "head-ct-segmentation"
RUNNERS = (CLASSIFIER, HEAD_CT)


@dataclass(frozen=True, slots=True)
class Task:
    """One model run, as a worker process receives it."""

    bundle: Path
    runner: str
    series_instance_uid: str
    sources: list[Path]
    """The series' files, in instance number order."""
    threshold: float
    out_dir: Path
    uid_key: list[str]
    """What the result's UIDs derive from: the same job gives the same UIDs."""
    ensemble: int = 1


class ModelPool:
    """`workers` processes that run tasks, each within `timeout` seconds."""

    def __init__(self, *, workers: int, timeout: float, threads: int = 1) -> None:
        self._timeout = timeout
        self._workers = workers
        self._lock = threading.Lock()
        self._running: set[Future[ModelResult]] = set()
        self._pool = ProcessPool(
            max_workers=workers,
            initializer=_start_worker,
            initargs=(threads,),
            context=multiprocessing.get_context("forkserver"),
        )

    def run(self, task: Task) -> ModelResult:
        """The task's result.

        Raises:
            ModelTimedOut, ModelCrashed, or the InferenceError the model raised
            (NotApplicable for a series it refuses).
        """
        future = self._pool.submit(execute, self._timeout, task)
        with self._lock:
            self._running.add(future)
        try:
            # The pool stops a run at its time limit; the wait's own limit is a backstop.
            return future.result(timeout=self._timeout + 30)
        except CancelledError:
            raise ModelCrashed("the model's process was stopped: the worker is stopping") from None
        except FutureTimeout:
            raise ModelTimedOut(
                f"no result within {self._timeout:g} s; the model's process was stopped"
            ) from None
        except ProcessExpired as exc:
            raise ModelCrashed(
                f"the model's process died during the run (exit code {exc.exitcode})"
            ) from None
        finally:
            with self._lock:
                self._running.discard(future)

    def warm(self, bundles: list[tuple[Path, str, int]]) -> None:
        """Start the worker processes and load (bundle, runner, ensemble) in them, without
        waiting, so that the first study is not the one that pays for it."""
        for _ in range(self._workers):
            self._pool.submit(preload, self._timeout, bundles)

    def close(self) -> None:
        """Stop the processes; runs in progress end at once with ModelCrashed."""
        with self._lock:
            running = list(self._running)
        for future in running:
            future.cancel()  # pebble stops the run's process; its waiter wakes
        self._pool.stop()  # type: ignore[no-untyped-call]
        self._pool.join(timeout=10)


_loaded: dict[tuple[Path, int], Any] = {}
"""The bundles this worker process has loaded, kept for the next jobs."""


def _start_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def preload(bundles: list[tuple[Path, str, int]]) -> None:
    """Load each (bundle, runner, ensemble) into this worker process."""
    for bundle, runner, ensemble in bundles:
        try:
            _model(bundle, runner, ensemble)
        except InferenceError as exc:  # the job that needs it fails with the reason
            log.warning("Cannot preload %s: %s", bundle, exc.reason)


def _model(bundle: Path, runner: str, ensemble: int) -> Any:
    """The loaded model of `bundle`, kept for the next jobs of this worker process."""
    key = (bundle, ensemble if runner == HEAD_CT else 1)
    if key not in _loaded:
        if runner == HEAD_CT:
            from inference.bundles import load_ensemble

            _loaded[key] = load_ensemble(bundle, ensemble)
        else:
            from inference.bundles import load

            _loaded[key] = load(bundle)
    return _loaded[key]


def execute(task: Task) -> ModelResult:
    """Run `task` (in a worker process)."""
    if task.runner == CLASSIFIER:
        return _classify(task)
    if task.runner == HEAD_CT:
        return _head_ct(task)
    raise InferenceError(f"no runner called {task.runner!r} (known: {', '.join(RUNNERS)})")


def _classify(task: Task) -> ModelResult:
    from pydicom import dcmread

    from inference.bundles import LoadedModel
    from inference.cxr import readable_image
    from inference.cxr import score as score_of
    from inference.results import derived_uid, triage_report

    model: LoadedModel = _model(task.bundle, CLASSIFIER, 1)
    image = dcmread(task.sources[0])
    score = score_of(model.network, readable_image(image))
    report = triage_report(
        image,
        model.info,
        score=score,
        threshold=task.threshold,
        series_instance_uid=derived_uid(*task.uid_key, "series"),
        sop_instance_uid=derived_uid(*task.uid_key, "report"),
    )
    path = task.out_dir / "report.dcm"
    report.save_as(path, enforce_file_format=True)
    return ModelResult(
        score=score,
        flagged=score >= task.threshold,
        finding=str(model.info.metadata.get("finding", model.info.name)),
        series_instance_uid=task.series_instance_uid,
        files=[path],
        result_sop_instance_uid=str(report.SOPInstanceUID),
    )


def _head_ct(task: Task) -> ModelResult:
    from inference.head_ct import run_head_ct

    info, networks = _model(task.bundle, HEAD_CT, task.ensemble)
    result: ModelResult = run_head_ct(
        info,
        networks,
        task.sources,
        threshold_ml=task.threshold,
        out_dir=task.out_dir,
        uid_key=task.uid_key,
    )
    return result
