"""How much one input may cost, in one place, each with its reason. Every limit is checked before
the work it bounds is done, and a file over a limit is refused with a message saying which.

The figures bound the work of one file so that one bad or hostile file (a decompression bomb, a
sparse file, ``/dev/zero``, a table that repeats one cell a million times) cannot take the
process's memory or the call's time, while leaving far more room than real documents need: a
1,000-page book is about 3 million characters and 3,000 chunks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kb.errors import ParseError

# Bytes of one file. Read at most this + 1 bytes (a larger size is refused from ``stat`` before
# reading): the whole file is held in memory while it is parsed.
MAX_FILE_BYTES = 100 * 1024 * 1024

# Characters of text taken from one file (about 6,000 book pages). The text is held in memory
# several times over while it is chunked and embedded; extraction stops as soon as it is passed.
MAX_TEXT_CHARS = 20_000_000

# Chunks of one document, counted after chunking and before anything is embedded or stored.
# At about 10 chunks/s on two cores (the local e5 model) this is over an hour of embedding.
MAX_CHUNKS_PER_DOCUMENT = 50_000

# Seconds of parsing per file, checked between pages, paragraphs, table rows and records.
PARSE_SECONDS = 120.0

# A .docx is a zip: its declared sizes are checked before anything is decompressed. Python's
# zipfile never returns more than an entry's declared size (and then fails its CRC check), so the
# declared sizes bound the real work.
MAX_ZIP_ENTRIES = 10_000  # a real .docx has tens of parts, hundreds with many images
MAX_UNZIPPED_BYTES = 256 * 1024 * 1024  # every part decompressed, images included
MAX_XML_BYTES = 64 * 1024 * 1024  # the XML parts python-docx parses into a tree (about 20x in memory)
# XML compresses about 10:1; a part that decompresses to megabytes at 100:1 or more is a bomb.
BOMB_RATIO = 100
BOMB_MIN_BYTES = 8 * 1024 * 1024


def mb(n: int) -> str:
    """Bytes for a person: ``100 MB``, ``20.3 MB``, ``3072 MB``."""
    return f"{round(n / 2**20, 1):g} MB"


@dataclass
class Budget:
    """The time and text one file may take while it is parsed. ``clock`` is injectable for tests."""

    name: str
    seconds: float = PARSE_SECONDS
    max_chars: int = MAX_TEXT_CHARS
    clock: Callable[[], float] = time.monotonic
    chars: int = 0
    _deadline: float = field(init=False)

    def __post_init__(self) -> None:
        self._deadline = self.clock() + self.seconds

    def check(self) -> None:
        """Raise ParseError once the file has taken longer than its time."""
        if self.clock() > self._deadline:
            raise ParseError(
                f"{self.name}: reading it took longer than {self.seconds:g} s, the limit per file; "
                "split it into smaller files."
            )

    def take(self, text: str) -> str:
        """Count ``text`` against the file's limit (and its time); return it."""
        self.chars += len(text)
        if self.chars > self.max_chars:
            raise ParseError(too_much_text(self.name, self.max_chars))
        self.check()
        return text


def too_much_text(name: str, limit: int = MAX_TEXT_CHARS) -> str:
    return f"{name}: more than {limit:,} characters of text, the limit per file; split it into smaller files."
