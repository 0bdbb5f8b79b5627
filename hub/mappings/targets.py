"""What each common-schema field accepts, read from the pydantic models.

Mapping files are checked against the models themselves (not a copy of their
field list), so a schema change is reflected in mapping validation at once.
"""

from __future__ import annotations

import datetime as dt
import types
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from functools import cache
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import ConfigDict, TypeAdapter

from hub.schema import MODELS

_STRICT = ConfigDict(strict=True)
_LAX = ConfigDict(strict=False)

_DESCRIBE: dict[type, str] = {
    str: "text",
    int: "a whole number",
    bool: "true/false",
    Decimal: "a decimal number",
    dt.date: "a date",
    tuple: "a list",
}


@dataclass(frozen=True)
class Target:
    """One field of a common-schema model, as a mapping sees it."""

    model: str
    name: str
    required: bool
    #: Python types a value may have (``None``: not known, not checked).
    accepts: frozenset[type] | None
    #: Validates a value exactly as the model will (strict).
    strict: TypeAdapter[Any]
    #: Validates and converts a constant from the mapping file (lax).
    lax: TypeAdapter[Any]
    #: For list fields: validates one item (strict), e.g. one need code.
    item: TypeAdapter[Any] | None

    @property
    def label(self) -> str:
        return f"{self.model}.{self.name}"


def describe(types_: frozenset[type] | set[type]) -> str:
    return " or ".join(sorted(_DESCRIBE.get(t, t.__name__) for t in types_))


@cache
def targets(model: str) -> dict[str, Target]:
    """The fields a mapping may set for ``model`` (everything but ``org``)."""
    out: dict[str, Target] = {}
    for name, info in MODELS[model].model_fields.items():
        if name == "org":
            continue
        ann: Any = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        item_ann = _tuple_item(info.annotation)
        out[name] = Target(
            model=model,
            name=name,
            required=info.is_required(),
            accepts=_accepts(info.annotation),
            strict=TypeAdapter(ann, config=_STRICT),
            lax=TypeAdapter(ann, config=_LAX),
            item=TypeAdapter(item_ann, config=_STRICT) if item_ann is not None else None,
        )
    return out


def plain(value: Any) -> Any:
    """Enum members as their string value, so outputs hold only plain types."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    return value


def _accepts(ann: Any) -> frozenset[type] | None:
    origin = get_origin(ann)
    if origin is Annotated:
        return _accepts(get_args(ann)[0])
    if origin is Union or origin is types.UnionType:
        found: set[type] = set()
        for arg in get_args(ann):
            if arg is type(None):
                continue
            sub = _accepts(arg)
            if sub is None:
                return None
            found |= sub
        return frozenset(found)
    if origin is tuple:
        return frozenset({tuple})
    if isinstance(ann, type):
        if issubclass(ann, Enum):
            return frozenset({str})
        if ann in _DESCRIBE:
            return frozenset({ann})
    return None


def _tuple_item(ann: Any) -> Any:
    origin = get_origin(ann)
    if origin is Annotated:
        return _tuple_item(get_args(ann)[0])
    if origin is Union or origin is types.UnionType:
        for arg in get_args(ann):
            item = _tuple_item(arg)
            if item is not None:
                return item
        return None
    if origin is tuple:
        return get_args(ann)[0]
    return None
