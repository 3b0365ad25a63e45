"""Prebuilt statements: built once at import, compiled once per database, run on the driver.

`Connection.execute` spends most of a short statement's time around the driver: it looks the
compiled form up in a cache, builds an execution context, fires events and wraps the cursor in
a result (about 25 µs for a one-row select of 16 columns on SQLite, of which the driver takes
7). The statements every task runs go through `Prebuilt` instead: compiled once per dialect
and set of parameter names, exactly as `Connection.execute` would compile them, then run on the
transaction's driver cursor with the same type processing both ways (the compiled bind
processors, and the result processors of the selected columns' types). Its rows are named
tuples: `row.column` and `row[0]` read as on SQLAlchemy's rows.

A statement whose compiled form needs more of SQLAlchemy (Python-side column defaults, IN
lists expanded at execution, parameters that are not positional) runs through
`Connection.execute`, as does everything while an engine has `before_cursor_execute`
listeners (statement counters and loggers see every statement).

An UPDATE's bound parameter may not be named after a column it sets (SQLAlchemy reserves those
names for the values it would take from `.values()`), so the value set on column `c` travels as
`new_c`: `setting` builds the clause, `new_values` the matching parameters.
"""

from __future__ import annotations

import importlib
from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import sqlalchemy as sa
from sqlalchemy.sql.compiler import ResultColumnsEntry, SQLCompiler

Params = Mapping[str, Any]
Processor = Callable[[Any], Any] | None


class _Bind(NamedTuple):
    name: str
    process: Processor
    parameter: sa.BindParameter[Any]


@dataclass(slots=True)
class _Plan:
    """A statement compiled for one dialect and one set of parameter names."""

    sql: str
    binds: tuple[_Bind, ...]
    columns: list[ResultColumnsEntry]
    # Made from the first result's cursor description, as SQLAlchemy's results do.
    row: Callable[[Sequence[Any]], Any] | None = field(default=None)

    def arguments(self, params: Params) -> list[Any]:
        arguments = []
        for name, process, parameter in self.binds:
            if name in params:
                value = params[name]
            elif parameter.required:
                raise sa.exc.InvalidRequestError(f"A value is required for bind parameter {name!r}")
            else:
                value = parameter.effective_value
            arguments.append(value if process is None else process(value))
        return arguments

    def row_maker(self, dialect: sa.Dialect, description: Sequence[Any]) -> Callable[..., Any]:
        """What makes a row of the driver's values: the columns' result processors (given the
        driver's column types, as SQLAlchemy's results do), then a named tuple."""
        if self.row is not None:
            return self.row
        processors = [
            (index, processor)
            for index, (column, described) in enumerate(zip(self.columns, description, strict=True))
            if (processor := column.type._cached_result_processor(dialect, described[1]))
        ]
        make = _row_type([column.keyname for column in self.columns])

        def processed(values: Sequence[Any]) -> Any:
            values = list(values)
            for index, process in processors:
                values[index] = process(values[index])
            return make(values)

        self.row = processed if processors else make
        return self.row


def _row_type(names: list[str]) -> Callable[[Iterable[Any]], Any]:
    row: Any = namedtuple("Row", names, rename=True)  # type: ignore[misc]
    return cast(Callable[[Iterable[Any]], Any], row._make)


class Prebuilt:
    """A Core statement built once and run many times (see the module's docstring)."""

    __slots__ = ("_plans", "statement")

    def __init__(self, statement: sa.Executable) -> None:
        self.statement = statement
        self._plans: dict[tuple[str, frozenset[str]], _Plan | None] = {}

    def rows(self, conn: sa.Connection, params: Params) -> list[Any]:
        plan = self._plan(conn, params)
        if plan is None:
            return list(conn.execute(self.statement, dict(params)).all())
        with closing(_execute(conn, plan.sql, plan.arguments(params))) as cursor:
            make = plan.row_maker(conn.dialect, cursor.description)
            return [make(values) for values in cursor.fetchall()]

    def first(self, conn: sa.Connection, params: Params) -> Any | None:
        rows = self.rows(conn, params)
        return rows[0] if rows else None

    def one(self, conn: sa.Connection, params: Params) -> Any:
        rows = self.rows(conn, params)
        if not rows:
            raise sa.exc.NoResultFound("No row was found when one was required")
        if len(rows) > 1:
            raise sa.exc.MultipleResultsFound("Multiple rows were found when one was required")
        return rows[0]

    def scalar(self, conn: sa.Connection, params: Params) -> Any | None:
        """The first column of the first row, or None without rows."""
        row = self.first(conn, params)
        return None if row is None else row[0]

    def scalar_one(self, conn: sa.Connection, params: Params) -> Any:
        return self.one(conn, params)[0]

    def scalars(self, conn: sa.Connection, params: Params) -> list[Any]:
        return [row[0] for row in self.rows(conn, params)]

    def run(self, conn: sa.Connection, params: Params) -> int:
        """Run a statement that returns no rows; returns how many rows it changed."""
        plan = self._plan(conn, params)
        if plan is None:
            return int(conn.execute(self.statement, dict(params)).rowcount)
        with closing(_execute(conn, plan.sql, plan.arguments(params))) as cursor:
            return int(cursor.rowcount)

    def run_many(self, conn: sa.Connection, many: Sequence[Params]) -> None:
        """Run the statement once for each of `many` (one executemany); whatever it returns
        (a RETURNING clause) is dropped."""
        if not many:
            return
        plan = self._plan(conn, many[0])
        if plan is None:
            conn.execute(self.statement, [dict(params) for params in many])
            return
        arguments = [plan.arguments(params) for params in many]
        _execute(conn, plan.sql, arguments, many=True).close()

    def _plan(self, conn: sa.Connection, params: Params) -> _Plan | None:
        dialect = conn.dialect
        key = (dialect.name, frozenset(params))
        try:
            plan = self._plans[key]
        except KeyError:
            plan = self._plans[key] = _compile(self.statement, dialect, params)
        if plan is not None and conn.dispatch.before_cursor_execute:
            return None
        return plan


def _execute(conn: sa.Connection, sql: str, arguments: Any, *, many: bool = False) -> Any:
    """The driver cursor of `conn`'s transaction that ran `sql` with `arguments` (with `many`,
    once for each of them), for the caller to close; the driver's error raised as
    SQLAlchemy's."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        (cursor.executemany if many else cursor.execute)(sql, arguments)
    except conn.dialect.loaded_dbapi.Error as error:
        cursor.close()
        raise _wrapped(conn, error, sql, arguments) from error
    return cursor


def _compile(statement: sa.Executable, dialect: sa.Dialect, params: Params) -> _Plan | None:
    """The statement's plan for `dialect`, or None if it needs `Connection.execute`."""
    compile_ = cast(Callable[..., SQLCompiler], statement.compile)  # type: ignore[attr-defined]
    compiled = compile_(dialect=dialect, column_keys=sorted(params))
    processors = compiled._bind_processors
    if (
        compiled.positiontup is None
        or any(not callable(processor) for processor in processors.values())  # tuple types
        or compiled.insert_prefetch
        or compiled.update_prefetch
        or compiled.post_compile_params
        or compiled.literal_execute_params
        or compiled.escaped_bind_names
    ):
        return None
    binds = tuple(
        _Bind(name, cast(Processor, processors.get(name)), compiled.binds[name])
        for name in compiled.positiontup
    )
    columns = compiled._result_columns or []
    return _Plan(compiled.string, binds, columns)


def _wrapped(
    conn: sa.Connection, error: Exception, sql: str, arguments: Any
) -> sa.exc.StatementError:
    """The driver's error as SQLAlchemy raises it (`IntegrityError` and the rest); a dropped
    connection is invalidated, so the pool replaces it."""
    dialect = conn.dialect
    disconnected = dialect.is_disconnect(error, conn.connection.dbapi_connection, None)  # type: ignore[arg-type]
    if disconnected and not conn.invalidated:
        conn.invalidate(error)
    return sa.exc.DBAPIError.instance(
        sql,
        arguments,
        error,
        dialect.loaded_dbapi.Error,
        connection_invalidated=disconnected,
        dialect=dialect,
    )


def one_of(column: sa.ColumnElement[Any], values: Iterable[object]) -> sa.ColumnElement[bool]:
    """`column IN values` for a fixed list, written as equalities: SQLAlchemy expands an IN
    list at each execution, so a prebuilt statement with one would run through it."""
    return sa.or_(*(column == value for value in values))


def setting(columns: Iterable[str]) -> dict[str, sa.BindParameter[object]]:
    """`SET column = :new_column` for each of `columns`, for an UPDATE's `.values()`."""
    return {column: sa.bindparam(f"new_{column}") for column in columns}


def new_values(values: Mapping[str, object]) -> dict[str, object]:
    """The parameters of `setting(values)`: each value under its column's `new_` name."""
    return {f"new_{column}": value for column, value in values.items()}


def upsert(conn: sa.Connection, table: sa.Table) -> Any:
    """An INSERT into `table` that can say what to do ON CONFLICT, in `conn`'s dialect (SQLite
    and PostgreSQL each spell their own). The dialect's module is imported when first used, so
    a server on SQLite never loads PostgreSQL's."""
    dialect = importlib.import_module(f"sqlalchemy.dialects.{conn.dialect.name}")
    return dialect.insert(table)
