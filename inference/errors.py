"""The inference package's errors, one tree.

::

    InferenceError
     ├── ModelRefused     a bundle that must not run (missing parts, weights not the pinned ones)
     └── NotApplicable    an image the model is not meant for (wrong body part, no pixels)
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
