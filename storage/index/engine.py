"""Index engines: SQLite (WAL, full sync) embedded, PostgreSQL at scale; migrations by alembic."""

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"

_SQLITE_PRAGMAS = (
    "journal_mode=WAL",
    "synchronous=FULL",  # a commit survives power loss, not only a crash (NORMAL may lose it)
    "foreign_keys=ON",
    # Other processes (the other listeners, pacs import) hold the write lock for moments. One
    # that holds it longer (a backup tool's BEGIN EXCLUSIVE) gets stores refused (A700) after
    # this wait, well within a modality's DIMSE timeout (30 s is common), not left to time
    # out there: tests/reliability/test_outages.py.
    "busy_timeout=10000",
    "case_sensitive_like=ON",  # DICOM matching of text is case-sensitive (PS3.4 C.2.2.2)
)


_LIBPQ_BOUNDS = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
    "tcp_user_timeout": 15000,
}
"""How long a PostgreSQL connection waits for a database that stopped answering (a network
partition, a dead host: nothing refuses, nothing answers) before it fails: 5 s to connect,
15 s for sent bytes to be acknowledged, 19 s for an idle wait to be found dead. Without
them a query waits for the kernel's defaults (minutes to hours), and the modality gives
up first. Each can be set otherwise in PACS_DATABASE_URL (``?connect_timeout=10``)."""


def create_index_engine(url: str) -> Engine:
    """Create the engine for `url`; for SQLite, create its folder and set the pragmas."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    parsed = make_url(url)
    bounds = {}
    if parsed.get_driver_name() in ("psycopg", "psycopg2"):  # libpq's parameters
        bounds = {name: value for name, value in _LIBPQ_BOUNDS.items() if name not in parsed.query}
    return create_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=bounds
    )


def _sqlite_engine(url: str) -> Engine:
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, connect_args={"check_same_thread": False}, pool_size=8, max_overflow=16
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Leave transaction control to SQLAlchemy's BEGIN (below), so SAVEPOINTs work.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
