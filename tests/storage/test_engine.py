"""Index engines: a PostgreSQL connection gives up on a database that says nothing."""

import time

import pytest
from sqlalchemy.exc import OperationalError

from storage.index.engine import create_index_engine
from tests.reliability.faults import FaultProxy

pytestmark = pytest.mark.postgres


def test_connecting_to_a_silent_postgresql_fails_within_the_connect_timeout(
    postgres_url: str,
) -> None:
    """Across a partition nothing refuses the connection: without libpq's connect_timeout,
    connecting waits for the kernel (minutes); with it, 5 s."""
    with FaultProxy(5432) as proxy:
        proxy.blackhole()
        engine = create_index_engine(
            postgres_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
        )
        started = time.monotonic()
        with pytest.raises(OperationalError, match="timeout"):
            engine.connect()
        assert time.monotonic() - started < 8
        engine.dispose()


def test_the_url_sets_its_own_limits(postgres_url: str) -> None:
    engine = create_index_engine(f"{postgres_url}&connect_timeout=9")
    with engine.connect() as conn:
        dsn = conn.connection.dbapi_connection.info.dsn  # type: ignore[union-attr]
    engine.dispose()
    assert "connect_timeout=9" in dsn
    assert "tcp_user_timeout=15000" in dsn
