"""Metadata filters with Chroma's ``where`` semantics, checked up front so mistakes get a clear
message instead of a storage error. The same filter is applied to both channels: the keyword
index evaluates it as a mask over its copy of the metadata (``kb.keyword.metadata``, the same
semantics as ``matches`` here), and every hit is checked again with ``matches``."""

from __future__ import annotations

import math
from typing import Any

from kb.errors import InvalidInput
from kb.jsontext import json_object

COMPARISONS = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"}
LOGICAL = {"$and", "$or"}
Scalar = str | int | float | bool
MAX_DEPTH = 32  # levels of $and/$or: far more than any real filter, far less than Python's recursion limit
MAX_VALUES = 10_000  # values of one $in/$nin list (SQLite binds each as a variable; its limit is 32,766)


def parse_filter(value: str | dict | None) -> dict | None:
    """Accept a dict or its JSON text; return a Chroma-ready ``where`` or None."""
    if isinstance(value, str):
        value = json_object(value, "The filter")
    return None if value is None or value == {} else normalize_filter(value)


def normalize_filter(where: Any, path: str = "filter", depth: int = 0) -> dict:
    """Validate and normalise: several top-level keys become an ``$and``; one-item ``$and``/``$or``
    lists become their item."""
    if depth > MAX_DEPTH:
        raise InvalidInput(f"The filter nests $and/$or more than {MAX_DEPTH} levels deep; simplify it.")
    if not isinstance(where, dict) or not where:
        raise InvalidInput(f'{path} must be a non-empty JSON object such as {{"lang": "zh"}}.')
    if len(where) > 1:
        return {"$and": [normalize_filter({k: v}, path, depth + 1) for k, v in where.items()]}
    ((key, value),) = where.items()
    if key in LOGICAL:
        if not isinstance(value, list) or not value:
            raise InvalidInput(f"{path}: {key} takes a non-empty list of conditions.")
        parts = [normalize_filter(v, f"{path}.{key}[{i}]", depth + 1) for i, v in enumerate(value)]
        return parts[0] if len(parts) == 1 else {key: parts}
    if key.startswith("$"):
        raise InvalidInput(f"{path}: unknown operator {key}; use $and or $or to combine conditions.")
    return {key: _condition(value, f"{path}.{key}")}


def _condition(value: Any, path: str) -> Any:
    if _is_scalar(value):
        return value
    if not isinstance(value, dict) or len(value) != 1:
        raise InvalidInput(f'{path}: expected a value or one operator such as {{"$gte": 3}}.')
    ((op, operand),) = value.items()
    if op not in COMPARISONS:
        raise InvalidInput(f"{path}: unknown operator {op}; use one of {', '.join(sorted(COMPARISONS))}.")
    if op in ("$in", "$nin"):
        if not isinstance(operand, list) or not operand or not all(_is_scalar(x) for x in operand):
            raise InvalidInput(f"{path}: {op} takes a non-empty list of values.")
        if len(operand) > MAX_VALUES:
            raise InvalidInput(f"{path}: {op} takes at most {MAX_VALUES} values.")
        if len({type(x) for x in operand}) > 1:
            raise InvalidInput(f"{path}: {op} values must all have the same type.")
        return {op: operand}
    if not _is_scalar(operand):
        raise InvalidInput(f"{path}: {op} takes a single string, number or boolean.")
    if op in ("$gt", "$gte", "$lt", "$lte") and (isinstance(operand, bool) or not isinstance(operand, int | float)):
        raise InvalidInput(f"{path}: {op} compares numbers only.")
    return {op: operand}


def _is_scalar(value: Any) -> bool:
    """Text, a boolean or a finite number (JSON's ``1e400`` and ``NaN`` arrive as inf and nan)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"The filter holds {value!r}, which is not a finite number; use an ordinary number.")
    return isinstance(value, str | int | float | bool)


def matches(where: dict | None, metadata: dict) -> bool:
    """Evaluate a normalised filter on one record's metadata, exactly.

    The store applies filters first; this re-check guarantees that every hit returned really
    satisfies the filter (seen: Chroma 1.5.9 lets ``{"$eq": 3.5}`` match an int 3)."""
    if where is None:
        return True
    ((key, cond),) = where.items()
    if key == "$and":
        return all(matches(c, metadata) for c in cond)
    if key == "$or":
        return any(matches(c, metadata) for c in cond)
    value = metadata.get(key)
    if not isinstance(cond, dict):
        cond = {"$eq": cond}
    ((op, operand),) = cond.items()
    if op == "$ne":
        return value is None or not _equal(value, operand)
    if op == "$nin":
        return value is None or not any(_equal(value, o) for o in operand)
    if value is None:
        return False
    if op == "$eq":
        return _equal(value, operand)
    if op == "$in":
        return any(_equal(value, o) for o in operand)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return {"$gt": value > operand, "$gte": value >= operand, "$lt": value < operand, "$lte": value <= operand}[op]


def _equal(a: Scalar, b: Scalar) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b
