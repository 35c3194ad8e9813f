"""Arrow schemas derived from the contracts, and the row conversion that goes with them.

Examples
--------
>>> from data_contracts import ReactionEvent
>>> schema = arrow_schema(ReactionEvent)
>>> str(schema.field("occurred_at").type), schema.field("reaction").type
('timestamp[us, tz=UTC]', DataType(string))
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from enum import Enum
from functools import cache
from typing import Any, Literal, TypeVar, Union, get_args, get_origin
from uuid import UUID

import pyarrow as pa
from pydantic import AwareDatetime, BaseModel

M = TypeVar("M", bound=BaseModel)

_SCALARS: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    datetime: pa.timestamp("us", tz="UTC"),
    AwareDatetime: pa.timestamp("us", tz="UTC"),
    date: pa.date32(),
    UUID: pa.string(),
}


class UnsupportedType(TypeError):
    """A contract field whose annotation has no Arrow mapping."""


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) != len(get_args(annotation))
        raise UnsupportedType(f"union {annotation!r} has no single Arrow type")
    return annotation, False


def arrow_type(annotation: Any) -> pa.DataType:
    """The Arrow type of one pydantic field annotation (``X | None`` maps like ``X``)."""
    annotation, _ = _strip_optional(annotation)
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    origin = get_origin(annotation)
    if origin is Literal:
        values = get_args(annotation)
        return arrow_type(type(values[0]))
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return pa.string()
    if origin is list:
        (item,) = get_args(annotation)
        return pa.list_(arrow_type(item))
    if origin is dict:
        key, value = get_args(annotation)
        return pa.map_(arrow_type(key), arrow_type(value))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct(
            [
                pa.field(name, arrow_type(f.annotation), nullable=not f.is_required())
                for name, f in annotation.model_fields.items()
            ]
        )
    raise UnsupportedType(f"no Arrow type for {annotation!r}")


@cache
def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    """The Arrow schema of a contract, one field per model field, in declaration order."""
    fields = []
    for name, info in model.model_fields.items():
        _, optional = _strip_optional(info.annotation)
        fields.append(pa.field(name, arrow_type(info.annotation), nullable=optional))
    return pa.schema(fields, metadata={"contract": model.__name__})


def _plain(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, BaseModel):
        return {k: _plain(v) for k, v in value}
    if isinstance(value, Mapping):
        return [(k, _plain(v)) for k, v in value.items()]
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _needs_plain(annotation: Any) -> bool:
    """Whether values of ``annotation`` need :func:`_plain` before Arrow takes them (UUIDs, enums,
    maps and nested models, at any depth); other values go to Arrow as they are."""
    if annotation is UUID or (isinstance(annotation, type) and issubclass(annotation, Enum | BaseModel)):
        return True
    origin = get_origin(annotation)
    if origin is dict:
        return True
    if origin in (Union, types.UnionType, list, tuple, Literal):
        return any(_needs_plain(a) for a in get_args(annotation) if not isinstance(a, str | int | bool))
    return False


@cache
def _plain_fields(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(name for name, f in model.model_fields.items() if _needs_plain(f.annotation))


def to_table(model: type[BaseModel], records: Iterable[BaseModel]) -> pa.Table:
    """An Arrow table of ``records`` with the contract's schema.

    Plain values are taken as they are; only fields holding UUIDs, enums, maps or nested models
    go through :func:`_plain` (per-row conversion is most of the cost of writing).
    """
    special = _plain_fields(model)
    names = list(model.model_fields)
    rows = []
    for r in records:
        values = r.__dict__
        row = {name: values[name] for name in names}
        for name in special:
            row[name] = _plain(row[name])
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=arrow_schema(model))


def from_table(model: type[M], table: pa.Table) -> list[M]:
    """Records back from an Arrow table written by :func:`to_table` (extra columns ignored)."""
    names = [n for n in model.model_fields if n in table.column_names]
    out = []
    for row in table.select(names).to_pylist(maps_as_pydicts="strict"):
        out.append(model.model_validate({k: v for k, v in row.items() if v is not None}))
    return out
