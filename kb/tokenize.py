"""Keyword tokens for the BM25 channel: Chinese (and other CJK) as character bigrams, everything
else as case-folded words with English stop words removed and Snowball stemming.

Why bigrams: on medqa-zh, BM25 over character bigrams scored nDCG@10 0.286 against 0.254 for
jieba's search-mode segmentation (``bench/RESULTS.md``), it needs no dictionary, and it never
misses a term because the segmenter cut it differently in the query and the document.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

import Stemmer

# Han (incl. extension A and compatibility), kana and Hangul: scripts written without spaces.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN_RUNS = re.compile(rf"([{_CJK}]+)|([^\W_{_CJK}]+)")
_CJK_TERM = re.compile(rf"[{_CJK}]")
WORD_CACHE = 200_000  # words whose term is remembered (a dictionary, cleared when full)

ENGLISH_STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
    ]
)


class KeywordTokenizer:
    """Turns text into BM25 terms. ``signature`` names the configuration, so an index built with
    another one is detected and rebuilt."""

    def __init__(self, *, stem: bool = True, stopwords: bool = True) -> None:
        self.stem = stem
        self.stopwords = ENGLISH_STOPWORDS if stopwords else frozenset()
        self._stemmer = Stemmer.Stemmer("english") if stem else None
        self.signature = f"v1:cjk=bigram:stem={int(stem)}:stop={int(stopwords)}"
        self._term_of: dict[str, str] = {}  # word -> its term ("" for a stop word)

    def __call__(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFKC", text).casefold()
        terms: list[str] = []
        term_of = self._term_of
        for cjk, word in _TOKEN_RUNS.findall(text):
            if cjk:
                terms.extend(_bigrams(cjk))
                continue
            term = term_of.get(word)
            if term is None:
                term = self._term(word)
            if term:
                terms.append(term)
        return terms

    def _term(self, word: str) -> str:
        if len(self._term_of) >= WORD_CACHE:
            self._term_of.clear()
        term = "" if word in self.stopwords else self._stem_word(word)
        self._term_of[word] = term
        return term

    def _stem_word(self, word: str) -> str:
        if self._stemmer is None or not word.isascii() or word.isdigit():
            return word
        return self._stemmer.stemWord(word)

    def tokenize_many(self, texts: Iterable[str]) -> list[list[str]]:
        return [self(t) for t in texts]

    def spans(self, text: str, terms: Iterable[str]) -> list[tuple[int, int]]:
        """Where ``text`` holds any of ``terms``: ``(start, end)`` character offsets into ``text``
        itself (not its normalised form), overlapping and touching spans merged."""
        wanted = set(terms)
        found: list[tuple[int, int]] = []
        for match in _TOKEN_RUNS.finditer(text):
            cjk, word = match.group(1), match.group(2)
            start = match.start()
            if word:
                if any(t in wanted for t in self(word)):
                    found.append(match.span())
                continue
            chars = [unicodedata.normalize("NFKC", c).casefold() for c in cjk]
            if len(chars) == 1 and chars[0] in wanted:
                found.append(match.span())
            found += [(start + i, start + i + 2) for i in range(len(chars) - 1) if chars[i] + chars[i + 1] in wanted]
        merged: list[tuple[int, int]] = []
        for begin, end in sorted(found):
            if merged and begin <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((begin, end))
        return merged


_default: KeywordTokenizer | None = None


def match_spans(query: str, text: str) -> list[tuple[int, int]]:
    """Where ``text`` holds the query's keyword terms, as the keyword channel sees them (the same
    tokenizer: Chinese character pairs, stemmed English words): ``(start, end)`` offsets into
    ``text``, for highlighting what a hit matched."""
    global _default
    if _default is None:
        _default = KeywordTokenizer()
    return _default.spans(text, _default(query))


def word_terms(terms: Iterable[str]) -> list[str]:
    """The terms that are words (not CJK character bigrams), each once, in order.

    A chunk holding a query's words is evidence of a match; holding some of a Chinese query's
    overlapping bigrams much less so (many straddle two words), so coverage counts words only."""
    return [t for t in dict.fromkeys(terms) if not _CJK_TERM.match(t)]


def _bigrams(run: str) -> list[str]:
    if len(run) == 1:
        return [run]
    return [run[i : i + 2] for i in range(len(run) - 1)]


def index_text(title: str, content: str) -> str:
    """The text both channels index for a chunk: its document title, then the chunk itself."""
    return f"{title}\n{content}" if title else content
