"""A keyword query over the index state: BM25 scores of every chunk, then the best ones.

For each query term (repeats count once per occurrence, as in Lucene and bm25s), take its
postings (slot, term weight), multiply the weights by the term's IDF and sum per slot with
``numpy.bincount``; the formula is ``kb.keyword.scoring``'s, the choice of the best slots
``kb.keyword.topk``'s. IDF uses live counts (or ``Stats`` given by the caller: several KBs
searched as one share one IDF per term, as a distributed search's DFS phase does); term weights
use ``State.avgdl``. A filter arrives as a mask over the slots: the scores of the others are set to
0 before the top is taken, so the result is exactly the unfiltered ranking restricted to the mask.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

import kb.keyword.scoring as scoring
import kb.keyword.topk as topk
from kb.keyword.hits import KeywordHits, QueryTerms, ScoreLookup
from kb.keyword.scoring import BM25Params
from kb.keyword.state import State


@dataclass
class Stats:
    """Collection statistics IDFs are computed from: live chunks, and chunks holding each term."""

    n: int = 0
    df: dict[str, int] = field(default_factory=dict)

    def __add__(self, other: Stats) -> Stats:
        df = dict(self.df)
        for term, count in other.df.items():
            df[term] = df.get(term, 0) + count
        return Stats(self.n + other.n, df)


def _postings(state: State, params: BM25Params, term: str) -> tuple[np.ndarray, np.ndarray, int]:
    """A term's slots and weights (snapshot and changes since), and its live document frequency."""
    slots, vocab = state.slots, state.vocab.ids
    at, ws = state.base.postings(vocab[term], state.avgdl, state.weigh(params))
    if state.delta.segments:
        new_slots, new_weights = state.delta.postings(vocab[term], state.weigh(params))
        if len(new_slots):
            at, ws = np.concatenate([at, new_slots]), np.concatenate([ws, new_weights])
    df = int(np.count_nonzero(slots.live[at])) if slots.n_dead else len(at)
    return at, ws, df


def term_stats(state: State, tokens: Sequence[str]) -> Stats:
    vocab = state.vocab.ids
    df = {term: _postings(state, scoring.DEFAULT, term)[2] for term in dict.fromkeys(tokens) if term in vocab}
    return Stats(state.slots.count, df)


def search(
    state: State,
    params: BM25Params,
    tokens: Sequence[str],
    limit: int,
    accept: Callable[[list[str]], set[str]] | None = None,
    mask: np.ndarray | None = None,
    stats: Stats | None = None,
) -> KeywordHits:
    slots, n, vocab = state.slots, state.slots.count, state.vocab.ids
    query = Counter(t for t in tokens if t in vocab)
    if not n or not query or limit <= 0:
        return KeywordHits([], [], 0.0)
    live = slots.live
    terms, repeats, dfs, term_slots, term_weights = [], [], [], [], []
    for term, qtf in query.items():
        at, ws, df = _postings(state, params, term)
        if df:
            terms.append(term)
            repeats.append(qtf)
            dfs.append(df if stats is None else max(df, stats.df.get(term, df)))
            term_slots.append(at)
            term_weights.append(ws)
    if not terms:
        return KeywordHits([], [], 0.0)
    if stats is not None:
        n = max(n, stats.n)
    idfs = [scoring.idf(df, n, params) for df in dfs]
    max_score = scoring.max_score(idfs, repeats, params)
    if stats is not None:  # the bound over every KB searched: the same for each, so shares compare
        everywhere = Counter(t for t in tokens if stats.df.get(t, 0) > 0)
        max_score = scoring.max_score(
            [scoring.idf(stats.df[t], n, params) for t in everywhere], list(everywhere.values()), params
        )
    factors = [q * i for q, i in zip(repeats, idfs, strict=True)]
    matched = QueryTerms(slots.slot_of, slots.size)
    matched.by_term = {term: (at, i) for term, at, i in zip(terms, term_slots, idfs, strict=True)}
    weights = np.concatenate(term_weights)
    weights *= np.repeat(np.asarray(factors, np.float32), [len(w) for w in term_weights])
    scores = np.bincount(np.concatenate(term_slots), weights=weights, minlength=slots.size)
    if slots.n_dead:
        scores[~live] = 0.0
    if mask is not None:
        scores[~mask[: len(scores)]] = 0.0
    if accept is None:
        best = topk.top(scores, limit, term_slots, factors)
    else:

        def accepted(window: np.ndarray) -> np.ndarray:
            ids = [slots.ids[s] for s in window.tolist()]
            ok = accept(ids)
            return np.fromiter((cid in ok for cid in ids), np.bool_, len(ids))

        best = topk.top_accepted(scores, limit, accepted)
    ids = [slots.ids[s] for s in best.tolist()]
    return KeywordHits(ids, scores[best].tolist(), max_score, ScoreLookup(scores, slots.slot_of), matched)
