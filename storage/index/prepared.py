"""Core statements compiled once per dialect and run on the driver's cursor.

On the ingest path SQLAlchemy's work per execution (cache key, parameter processing, result
wrapping) costs about 60 µs a statement here, twenty times what SQLite needs to run one;
a stored instance takes ten statements. A :class:`Prepared` statement is compiled by
SQLAlchemy for the connection's dialect (so the SQL stays portable), then executed directly,
inside the same transaction, with SQLAlchemy's own bind processors applied.
"""

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import Compiled

_Compiled = tuple[str, list[str] | None, dict[str, Any], dict[str, Any]]
"""SQL text, parameter order (positional drivers), bind processors, fixed values."""


class Prepared:
    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: dict[str, _Compiled] = {}

    def _for(self, dialect: Dialect) -> "_Compiled":
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled: Compiled = self.statement.compile(dialect=dialect)  # type: ignore[attr-defined]
            binds = compiled.binds  # type: ignore[attr-defined]
            processors = {
                name: processor
                for name, bind in binds.items()
                if (processor := bind.type.bind_processor(dialect)) is not None
            }
            order = list(compiled.positiontup or ()) if compiled.positional else None  # type: ignore[attr-defined]
            fixed = {  # values the statement carries itself, such as the 1 in "n + 1"
                name: bind.effective_value for name, bind in binds.items() if not bind.required
            }
            found = (str(compiled), order, processors, fixed)
            self._compiled[dialect.name] = found
        return found

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """Run with `params` in `conn`'s transaction; return the DBAPI cursor."""
        sql, order, processors, fixed = self._for(conn.dialect)
        values = {
            name: processors[name](value) if name in processors else value
            for name, value in {**fixed, **params}.items()
        }
        if order is not None and not values.keys() >= set(order):
            missing = sorted(set(order) - values.keys())
            raise KeyError(f"no value for {missing}: columns with defaults must be given one")
        args = tuple(values[name] for name in order) if order is not None else values
        cursor = conn.connection.cursor()
        dbapi_error = conn.dialect.loaded_dbapi.Error
        try:
            cursor.execute(sql, args)
        except dbapi_error as exc:
            cursor.close()
            # The same exception classes SQLAlchemy raises (IntegrityError, OperationalError...)
            raise DBAPIError.instance(sql, args, exc, dbapi_error, dialect=conn.dialect) from exc
        return cursor

    def first(self, conn: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        cursor = self.execute(conn, params)
        row = cursor.fetchone()
        cursor.close()
        return tuple(row) if row is not None else None

    def scalar(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        row = self.first(conn, params)
        return row[0] if row is not None else None

    def run(self, conn: Connection, params: Mapping[str, Any]) -> None:
        self.execute(conn, params).close()
