"""The HTTP API's errors: each carries the status the standard names and a reason a person
can read; the app turns them into a JSON body and a log line."""


class ApiError(Exception):
    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadRequest(ApiError):
    status = 400


class NotFoundError(ApiError):
    status = 404


class NotAcceptable(ApiError):
    status = 406


class Conflict(ApiError):
    status = 409


class PayloadTooLarge(ApiError):
    status = 413


class UnsupportedMediaType(ApiError):
    status = 415


RETRY_AFTER_SECONDS = 30
"""What a 503 asks the client to wait before trying again (Retry-After)."""

UNAVAILABLE = "the archive cannot do this now (the server log says why); try again later"
"""What a 503 tells the client: its reason names hosts, paths and driver errors, for the
administrator's log, not for whoever asked."""


class Unavailable(ApiError):
    """The archive cannot take or serve this now (database or storage down, disk full)."""

    status = 503
