"""The inference package's errors, one tree.

::

    InferenceError
     ├── ModelRefused     a bundle that must not run (missing parts, weights not the pinned ones)
     ├── NotApplicable    a study or image the model is not meant for (the job is skipped)
     ├── ModelTimedOut    a run past its time limit (its process was stopped)
     ├── ModelCrashed     a run whose process died
     ├── RoutingError     a routing rules file that cannot be used
     ├── QueueError       a broker that cannot be used
     └── EvaluationError  a model, labels or cases that cannot be evaluated
          └── LabelsError a labels file that is not a CSV of case,label rows
"""


class InferenceError(Exception):
    """Base of every error the inference package raises on purpose."""

    @property
    def reason(self) -> str:
        return str(self)


class ModelRefused(InferenceError):
    """The model bundle must not be used."""


class NotApplicable(InferenceError):
    """The model is not meant for this input; the job is skipped with this reason."""


class EvaluationError(InferenceError):
    """The model, the labels or the cases cannot be evaluated; the reason says why."""


class LabelsError(EvaluationError):
    """The labels file cannot be read: not a CSV of ``case,label`` rows."""


class ModelTimedOut(InferenceError):
    """The model gave no result within its time limit; its process was stopped."""


class ModelCrashed(InferenceError):
    """The model's process died during the run."""


class RoutingError(InferenceError):
    """The rules file cannot be used."""


class QueueError(InferenceError):
    """The broker cannot be used."""
