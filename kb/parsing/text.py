"""Bytes -> text: UTF-8 first, then a byte-order mark, then a detected legacy encoding.

Files written on Windows or older systems arrive in legacy encodings: GBK/GB18030 (Simplified
Chinese), Big5 (Traditional Chinese), Shift-JIS (Japanese), EUC-KR, Windows-1252/Latin-1 and
Windows-1251. Decoding them all as GB18030 "succeeds" with garbage (``'M黮ler Stra遝'``), so the
encoding is detected with ``charset-normalizer`` (maintained, pure Python with optional speedups,
already installed with ``requests``): it decodes the bytes with each candidate and measures how
much the result looks like text ("chaos"). Candidates are limited to the encodings above, and when
several fit equally well (short texts) the order above decides, Chinese first for our users. Bytes
that fit none are refused with a message naming what to convert to.
"""

from __future__ import annotations

import codecs

from kb.errors import ParseError

# Candidates in order of preference when the detector finds several equally clean.
LEGACY_ENCODINGS = ("gb18030", "big5", "cp932", "euc_kr", "cp1252", "cp1251")
DISPLAY_NAMES = {
    "gb18030": "GB18030/GBK",
    "big5": "Big5",
    "cp932": "Shift-JIS",
    "euc_kr": "EUC-KR",
    "cp1252": "Windows-1252/Latin-1",
    "cp1251": "Windows-1251",
    "utf_16": "UTF-16",
    "utf_32": "UTF-32",
}
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf_32"),  # before UTF-16: its BOM starts with UTF-16 LE's
    (codecs.BOM_UTF32_BE, "utf_32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf_16"),
    (codecs.BOM_UTF16_BE, "utf_16"),
)
MAX_CHAOS = 0.2  # the detector's own default: more than 20 % odd characters is not this encoding


def detect_encoding(data: bytes) -> str | None:
    """The encoding of ``data``: UTF-8, one its byte-order mark names, or the cleanest legacy one."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return codec
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = [m for m in from_bytes(data, cp_isolation=list(LEGACY_ENCODINGS)) if m.chaos <= MAX_CHAOS]
    if not matches:
        return None
    best = min(m.chaos for m in matches)
    found = {m.encoding for m in matches if m.chaos <= best + 0.01}
    return next(codec for codec in LEGACY_ENCODINGS if codec in found) if found & set(LEGACY_ENCODINGS) else None


def decode_text(data: bytes, name: str = "text") -> str:
    """Decode a text file; refuse bytes that are no known encoding with a message saying so."""
    codec = detect_encoding(data)
    if codec is not None:
        try:
            return data.decode(codec)
        except UnicodeDecodeError:  # the detector samples; the whole file must decode
            pass
    raise ParseError(
        f"{name}: not text in UTF-8 or a known legacy encoding "
        f"({', '.join(DISPLAY_NAMES[c] for c in LEGACY_ENCODINGS)}); convert it to UTF-8 and try again."
    )


def encoding_name(codec: str) -> str:
    return DISPLAY_NAMES.get(codec, codec.upper().replace("_", "-"))
