"""Tool parameters arrive as loosely typed JSON (numbers may be strings, empty fields may be None
or ""). These helpers coerce them and raise InvalidInput with the parameter's name."""

from __future__ import annotations

import ast
import math

from kb import InvalidInput
from kb import json_object as parse_json_object


def text(params: dict, name: str, default: str = "") -> str:
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, str | int | float):
        raise InvalidInput(f"Parameter '{name}' must be text.")
    return str(value).strip() or default


def number(
    params: dict, name: str, default: float | None, *, lo: float, hi: float, integer: bool = False
) -> float | None:
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"Parameter '{name}' must be a number; got {value!r}.") from None
    if not math.isfinite(number):
        raise InvalidInput(f"Parameter '{name}' must be a finite number; got {value!r}.")
    if integer and number != int(number):
        raise InvalidInput(f"Parameter '{name}' must be a whole number; got {value!r}.")
    if not lo <= number <= hi:
        raise InvalidInput(f"Parameter '{name}' must be between {lo:g} and {hi:g}; got {value!r}.")
    return int(number) if integer else number


def choice(params: dict, name: str, options: tuple[str, ...], default: str) -> str:
    value = text(params, name, default)
    if value not in options:
        raise InvalidInput(f"Parameter '{name}' must be one of {', '.join(options)}; got {value!r}.")
    return value


def boolean(params: dict, name: str, default: bool = False) -> bool:
    value = params.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise InvalidInput(f"Parameter '{name}' must be true or false; got {value!r}.")


def json_object(params: dict, name: str) -> dict | None:
    return parse_json_object(params.get(name), f"Parameter '{name}'")


def names(params: dict, *keys: str) -> list[str]:
    """Knowledge-base names from a (multi-)select and/or a comma/newline-separated text field.

    A multiple dynamic-select reaches the tool as a list, or as that list stringified by Dify's api
    (``cast_parameter_value`` turns it into ``"['a', 'b']"``); a JSON list typed into the text field
    works too."""
    found: list[str] = []
    for key in keys:
        value = params.get(key)
        if value is None or value == "":
            continue
        for item in _listed(value):
            item = str(item).strip()
            if item and item not in found:
                found.append(item)
    return found


def _listed(value) -> list:
    if isinstance(value, list | tuple):
        return list(value)
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            parsed = ast.literal_eval(text)  # Python's str() of a list, or a JSON list of strings
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            parsed = None
        if isinstance(parsed, list | tuple):
            return list(parsed)
    return text.replace("\n", ",").replace("，", ",").split(",")


def one_name(params: dict, key: str) -> str:
    """One knowledge-base name from a single select or a text field: a selection Dify sent as a
    one-element list (or that list stringified) is unwrapped; commas stay part of the name."""
    value = params.get(key)
    if isinstance(value, str) and value.strip().startswith("["):
        listed = _listed(value)
        value = listed[0] if len(listed) == 1 else value
    elif isinstance(value, list | tuple):
        if len(value) > 1:
            raise InvalidInput(f"Parameter '{key}' takes one knowledge base; got {len(value)}.")
        value = value[0] if value else None
    return text({key: value}, key)
