"""Knowledge-base display names and the Chroma collection names derived from them.

Users type names in any language ("产品手册", "HR FAQ"). The display name is kept as typed (after
Unicode NFKC normalisation and whitespace folding); the collection name is a deterministic,
Chroma-valid ASCII form: an optional readable slug plus a hash of the case-folded name, so
"HR FAQ" and "hr  faq" are the same knowledge base.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from kb.errors import InvalidInput

MAX_NAME_CHARS = 64
COLLECTION_PREFIX = "kb-"
_SLUG_CHARS = re.compile(r"[^a-z0-9]+")


def normalize_name(name: str) -> str:
    """Return the display form of a KB name, or raise InvalidInput with the reason."""
    if not isinstance(name, str):
        raise InvalidInput("The knowledge base name must be text.")
    text = " ".join(unicodedata.normalize("NFKC", name).split())
    if not text:
        raise InvalidInput("The knowledge base name is empty; give it a name such as 'HR FAQ' or '产品手册'.")
    if len(text) > MAX_NAME_CHARS:
        raise InvalidInput(f"The knowledge base name has {len(text)} characters; at most {MAX_NAME_CHARS} are allowed.")
    if any(unicodedata.category(ch)[0] == "C" for ch in text):
        raise InvalidInput("The knowledge base name contains control or invisible characters; remove them.")
    return text


def collection_name(name: str) -> str:
    """Map a KB name (any language) to its Chroma collection name, e.g. ``kb-hr-faq-1a2b3c4d5e6f``."""
    display = normalize_name(name)
    digest = hashlib.sha256(display.casefold().encode("utf-8")).hexdigest()[:12]
    slug = _SLUG_CHARS.sub("-", display.casefold()).strip("-")[:40].strip("-")
    return f"{COLLECTION_PREFIX}{slug}-{digest}" if slug else f"{COLLECTION_PREFIX}{digest}"
