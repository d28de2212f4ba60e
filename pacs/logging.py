"""Log lines people can read (text) or tools can parse (json), fields included."""

import json
import logging
import sys
from datetime import UTC, datetime

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class PeerErrorsInOneLine(logging.Filter):
    """pynetdicom logs a peer's malformed PDU or DIMSE message with a traceback, then aborts
    the association: the error's line is enough (at DEBUG the traceback is kept), and a
    peer sending garbage cannot fill the log with stacks that read like crashes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.name.startswith("pynetdicom"):
            record.exc_info = None
            record.exc_text = None
        return True


def configure(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if level.upper() != "DEBUG":
        handler.addFilter(PeerErrorsInOneLine())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library warnings go to the log, not to stderr; pydicom repeats each as a log line, and
    # the archive logs why it refused an instance itself.
    logging.captureWarnings(True)
    logging.getLogger("pydicom").setLevel(max(logging.ERROR, root.level))
    # pynetdicom logs every PDU at INFO; its warnings and errors are what matter here.
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
