"""JSON objects typed as text (CLI flags, Dify form fields, filters), parsed with one message style."""

from __future__ import annotations

import json
from typing import Any

from kb.errors import InvalidInput


def json_object(value: Any, what: str) -> dict | None:
    """A dict, or its JSON text -> dict; empty -> None; anything else -> InvalidInput naming ``what``."""
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{what} is not valid JSON ({exc.msg} at column {exc.colno}).") from None
        except RecursionError:
            raise InvalidInput(f"{what} is nested too deeply to read.") from None
    if not isinstance(value, dict):
        raise InvalidInput(f'{what} must be a JSON object, e.g. {{"lang": "zh"}}.')
    return value
