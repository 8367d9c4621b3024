"""The keyword channel's index: BM25 over the chunks' terms, incremental and persisted.

Modules, each readable alone (a newcomer changing the scoring reads ``scoring``; the file format,
``ondisk``):

- ``scoring``: the BM25 formula as pure functions, and its parameters (``BM25Params``);
- ``topk``: the best slots of a score array, unfiltered and filtered (pure functions);
- ``query``: a query over the index state: scores, then ``topk``;
- ``hits``: what a search returns (``KeywordHits``);
- ``ondisk``: the files and their format (``FORMAT``), the snapshot container;
- ``disk_array``: arrays read from the snapshot with ``pread``, checked by CRC;
- ``journal``: the SQLite journal of the changes since the snapshot;
- ``slots``: per-chunk columns (length, the vector copy, ...);
- ``postings``: the snapshot's postings and those added since;
- ``state``: everything the index holds in memory, in one object;
- ``index``: ``KeywordIndex``: opening, writing, compacting, refreshing, searching.
"""

from kb.keyword.errors import IndexUnusable
from kb.keyword.hits import KeywordHits
from kb.keyword.index import KeywordIndex
from kb.keyword.scoring import BM25Params

__all__ = ["BM25Params", "IndexUnusable", "KeywordHits", "KeywordIndex"]
