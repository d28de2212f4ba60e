"""Index rows as JSON answers: times as ISO 8601 text, the rest as it is; and the largest
number a client may give for a row or an offset."""

from datetime import datetime
from typing import Any

MAX_INTEGER = 2**63 - 1
"""The largest integer the index's databases take (a signed 64-bit one): a larger offset
or row id is refused as a bad request rather than failing in the database."""


def json_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
