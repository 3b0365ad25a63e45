"""Bound parameters for the SET clause of prebuilt UPDATE statements (see `kennel.storage`).

An UPDATE's bound parameter may not be named after a column it sets (SQLAlchemy reserves those
names for the values it would take from `.values()`), so the value set on column `c` travels as
`new_c`: `setting` builds the clause, `new_values` the matching parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import sqlalchemy as sa


def setting(columns: Iterable[str]) -> dict[str, sa.BindParameter[object]]:
    """`SET column = :new_column` for each of `columns`, for an UPDATE's `.values()`."""
    return {column: sa.bindparam(f"new_{column}") for column in columns}


def new_values(values: Mapping[str, object]) -> dict[str, object]:
    """The parameters of `setting(values)`: each value under its column's `new_` name."""
    return {f"new_{column}": value for column, value in values.items()}
