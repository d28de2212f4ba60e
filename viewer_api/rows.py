"""Index rows as JSON answers: times as ISO 8601 text, the rest as it is."""

from datetime import datetime
from typing import Any


def json_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
