"""What a stored chunk looks like: its id, its reserved metadata fields and the user's metadata.

Every chunk in Chroma carries the reserved fields below plus the user's flat metadata (text,
numbers, booleans). Chunk ids hash the document id, title, text, parent text and occurrence, so an
id is the content hash: an id Chroma already holds already holds this text.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

from kb.errors import InvalidInput

# Written by the engine on every chunk; a user's metadata may not use them.
SYSTEM_KEYS = frozenset(
    {
        "doc_id",
        "title",
        "source",
        "position",
        "content_hash",
        "tokens",
        "parent_position",
        "parent_text",
        "ingested_at",
        "file_hash",
    }
)
# Written by earlier versions (the chunk id already hashes the content); still reserved, never compared.
LEGACY_KEYS = frozenset({"content_hash", "tokens"})
# Fields that change on every ingest without the chunk changing.
VOLATILE_KEYS = frozenset({"ingested_at"}) | LEGACY_KEYS
MAX_METADATA_KEYS = 32
MAX_METADATA_TEXT = 8192  # characters of one metadata text value

Metadata = dict[str, str | int | float | bool]


def utc_timestamp(seconds: float | None = None) -> str:
    """The one timestamp format of the store (ingest times, KB creation): ISO 8601, UTC, seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def chunk_id(doc_id: str, title: str, content: str, parent: str | None, occurrence: int) -> str:
    h = hashlib.sha256()
    for part in (doc_id, title, content, parent or "", str(occurrence)):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:32]


def user_metadata(meta: dict[str, Any]) -> Metadata:
    """The user's part of a stored chunk's metadata."""
    return {k: v for k, v in meta.items() if k not in SYSTEM_KEYS}


def check_metadata(metadata: Any, where: str = "metadata") -> Metadata:
    """User metadata must be a flat object of text/number/boolean values whose keys are not ours."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidInput(f'{where} must be a JSON object such as {{"lang": "zh", "year": 2024}}.')
    if len(metadata) > MAX_METADATA_KEYS:
        raise InvalidInput(f"{where} has {len(metadata)} keys; at most {MAX_METADATA_KEYS} are allowed.")
    for key, value in metadata.items():
        if not isinstance(key, str) or not key.strip() or key.startswith("$") or not is_text(key):
            raise InvalidInput(f"{where}: {key!r} is not a usable key (non-empty text, not starting with $).")
        if key in SYSTEM_KEYS:
            raise InvalidInput(f"{where}: {key!r} is reserved; reserved keys are {', '.join(sorted(SYSTEM_KEYS))}.")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(f"{where}: the value of {key!r} is not a finite number.")
        if not isinstance(value, str | int | float | bool):
            raise InvalidInput(
                f"{where}: the value of {key!r} is {type(value).__name__}; "
                "only text, numbers and true/false are allowed."
            )
        if isinstance(value, str) and (len(value) > MAX_METADATA_TEXT or not is_text(value)):
            raise InvalidInput(
                f"{where}: the value of {key!r} must be valid text of at most {MAX_METADATA_TEXT} characters."
            )
    return dict(metadata)


def is_text(text: str) -> bool:
    """Encodable as UTF-8 (no lone surrogates, which arrive from bytes that were not UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def differs(stored: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether a stored chunk's metadata must be rewritten to become ``wanted``."""
    return {k: v for k, v in stored.items() if k not in VOLATILE_KEYS} != {
        k: v for k, v in wanted.items() if k not in VOLATILE_KEYS
    }


def replacing(stored: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """``wanted`` as a Chroma update: Chroma merges metadata, so keys to drop are sent as None."""
    return wanted | {k: None for k in stored if k not in wanted}
