"""CSV rows and JSON records -> text blocks ("key: value" lines), within the file's budget."""

from __future__ import annotations

import csv
import io
import json

from kb.errors import ParseError
from kb.limits import MAX_TEXT_CHARS, Budget
from kb.parsing.text import decode_text


def parse_csv(data: bytes, name: str, budget: Budget) -> tuple[str, str]:
    text = decode_text(data, name)
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    limit = csv.field_size_limit()
    try:
        csv.field_size_limit(MAX_TEXT_CHARS)  # a long field is text like any other (the budget caps it)
        header = next(reader, None)
        if header is None:
            return "", ""
        blocks = []
        for row in reader:
            block = "\n".join(f"{h}: {v}" for h, v in zip(header, row, strict=False) if str(v).strip())
            if block:
                blocks.append(budget.take(block))
    except csv.Error as exc:
        raise ParseError(f"{name}: not readable as CSV at line {reader.line_num} ({exc}).") from exc
    finally:
        csv.field_size_limit(limit)
    return "\n\n".join(blocks), ""


def parse_json(data: bytes, name: str, budget: Budget) -> tuple[str, str]:
    try:
        value = json.loads(decode_text(data, name))
    except json.JSONDecodeError as exc:
        raise ParseError(f"{name}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}.") from exc
    except RecursionError as exc:
        raise ParseError(f"{name}: the JSON is nested too deeply to read (hundreds of levels); flatten it.") from exc
    items = value if isinstance(value, list) else [value]
    blocks = []
    for item in items:
        budget.take(block := _json_block(item))
        blocks.append(block)
    return "\n\n".join(blocks), ""


def _json_block(item: object) -> str:
    if isinstance(item, dict):
        return "\n".join(
            f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}" for k, v in item.items()
        )
    return item if isinstance(item, str) else json.dumps(item, ensure_ascii=False, indent=1)
