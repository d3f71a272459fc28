"""A few statements of the reply's hot path, run without compiling a queryset.

Building a queryset's SQL is most of what an ORM query costs here: profiled, reading one
conversation spent half its time in Django's SQL compiler and 17 µs running the
statement, for 0.35–0.6 ms in all (bench §3's single turn made four such queries
before the model could be asked; a WebSocket handshake made five, the most of its cost).
These helpers write the same simple statements from the model's metadata once, then
only run them. Values are prepared for the database by each field (`get_db_prep_value`),
and rows come back through the backend's own converters and `Model.from_db`, so callers
get exactly the instances the ORM returns, on SQLite and PostgreSQL alike. Anything with
joins or expressions stays with the ORM.
"""
from __future__ import annotations

import functools
from typing import TypeVar

from django.db import connections, models
from django.db.models.expressions import Col

M = TypeVar("M", bound=models.Model)


def get(model: type[M], using: str = "default", **where: object) -> M | None:
    """The one row whose fields equal the values of `where` (never None), or None."""
    if None in where.values():
        raise ValueError("rows.get() looks a row up by values, not by NULL")
    connection = connections[using]
    sql, columns, names = _select(model, using, tuple((name, 1, False) for name in where))
    with connection.cursor() as cursor:
        cursor.execute(sql, _prepared(model, where, connection))
        row = cursor.fetchone()
    return None if row is None else _instance(model, using, connection, columns, names, row)


def filter(model: type[M], *, order_by: tuple[str, ...] = (), using: str = "default", **where: object) -> list[M]:  # noqa: A001
    """Every row whose fields match `where`, in the order of `order_by` (field names, "-" for
    descending), as the ORM's `filter().order_by()` gives them. A value matches itself; None
    matches NULL; a list matches any of its values (None among them: NULL too)."""
    connection = connections[using]
    shape, params = [], []
    for name, value in where.items():
        values = value if isinstance(value, list) else [value]
        given = [item for item in values if item is not None]
        shape.append((name, len(given), len(given) < len(values)))
        field = model._meta.get_field(name)
        params += [field.get_db_prep_value(item, connection) for item in given]
    sql, columns, names = _select(model, using, tuple(shape), order_by)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        found = cursor.fetchall()
    return [_instance(model, using, connection, columns, names, row) for row in found]


def _instance(model: type[M], using: str, connection, columns: list, names: list[str], row: tuple) -> M:
    """The instance the ORM would build from this row: each column through its converters."""
    values = []
    for value, (column, converters) in zip(row, columns, strict=True):
        for convert in converters:
            value = convert(value, column, connection)
        values.append(value)
    return model.from_db(using, names, values)


def update(model: type[models.Model], values: dict[str, object], using: str = "default", **where: object) -> int:
    """UPDATE the rows whose fields equal `where` (None: IS NULL) to `values`; how many changed."""
    connection = connections[using]
    fields = model._meta
    sets = ", ".join(f"{_quoted(model, name, using)} = %s" for name in values)
    params = [fields.get_field(name).get_db_prep_save(value, connection) for name, value in values.items()]
    where_sql, where_params = _where(model, where, connection, using)
    return _run(connection, f"UPDATE {_table(model, using)} SET {sets} WHERE {where_sql}", params + where_params)


def _run(connection, sql: str, params: list) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def _where(model: type[models.Model], where: dict[str, object], connection, using: str) -> tuple[str, list]:
    clauses, params = [], []
    for name, value in where.items():
        column = _quoted(model, name, using)
        if value is None:
            clauses.append(f"{column} IS NULL")
        else:
            clauses.append(f"{column} = %s")
            params.append(model._meta.get_field(name).get_db_prep_value(value, connection))
    return " AND ".join(clauses), params


def _prepared(model: type[models.Model], where: dict[str, object], connection) -> list:
    return [model._meta.get_field(name).get_db_prep_value(value, connection) for name, value in where.items()]


@functools.cache
def _table(model: type[models.Model], using: str) -> str:
    return connections[using].ops.quote_name(model._meta.db_table)


@functools.cache
def _quoted(model: type[models.Model], name: str, using: str) -> str:
    return connections[using].ops.quote_name(model._meta.get_field(name).column)


@functools.cache
def _select(model: type[models.Model], using: str, where: tuple[tuple[str, int, bool], ...],
            order_by: tuple[str, ...] = ()) -> tuple[str, list, list[str]]:
    """SELECT of every concrete column, each column's converters, and the attribute names.
    `where` names each field with how many values it may equal and whether it may be NULL."""
    connection = connections[using]
    table = model._meta.db_table
    fields = model._meta.concrete_fields
    columns = []
    for field in fields:
        column = Col(table, field)
        columns.append((column, connection.ops.get_db_converters(column) + column.get_db_converters(connection)))
    select = ", ".join(_quoted(model, field.name, using) for field in fields)
    sql = f"SELECT {select} FROM {_table(model, using)}"
    if where:
        sql += " WHERE " + " AND ".join(_matches(_quoted(model, name, using), count, null) for name, count, null in where)
    if order_by:
        sql += " ORDER BY " + ", ".join(f"{_quoted(model, name.removeprefix('-'), using)}"
                                        f"{' DESC' if name.startswith('-') else ' ASC'}" for name in order_by)
    return sql, columns, [field.attname for field in fields]


def _matches(column: str, count: int, null: bool) -> str:
    tests = [f"{column} = %s"] if count == 1 else [f"{column} IN ({', '.join(['%s'] * count)})"] if count else []
    if null:
        tests.append(f"{column} IS NULL")
    if not tests:
        return "1 = 0"  # an empty list matches nothing
    return tests[0] if len(tests) == 1 else f"({' OR '.join(tests)})"
