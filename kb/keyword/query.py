"""A keyword query over the index state: BM25 scores of every chunk, then the best ones.

For each query term (repeats count once per occurrence, as in Lucene and bm25s), take its
postings (slot, term weight), multiply the weights by the term's IDF and sum per slot with
``numpy.bincount``; the formula is ``kb.keyword.scoring``'s, the choice of the best slots
``kb.keyword.topk``'s. IDF uses live counts; term weights use ``State.avgdl``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

import kb.keyword.scoring as scoring
import kb.keyword.topk as topk
from kb.keyword.hits import KeywordHits, QueryTerms, ScoreLookup
from kb.keyword.scoring import BM25Params
from kb.keyword.state import State


def search(
    state: State,
    params: BM25Params,
    tokens: Sequence[str],
    limit: int,
    accept: Callable[[list[str]], set[str]] | None = None,
) -> KeywordHits:
    slots, n, vocab = state.slots, state.slots.count, state.vocab.ids
    query = Counter(t for t in tokens if t in vocab)
    if not n or not query or limit <= 0:
        return KeywordHits([], [], 0.0)
    weigh = state.weigh(params)
    base, avgdl = state.base, state.avgdl
    delta = state.delta if state.delta.segments else None
    live = slots.live
    terms, repeats, dfs, term_slots, term_weights = [], [], [], [], []
    for term, qtf in query.items():
        at, ws = base.postings(vocab[term], avgdl, weigh)
        if delta is not None:
            new_slots, new_weights = delta.postings(vocab[term], weigh)
            if len(new_slots):
                at, ws = np.concatenate([at, new_slots]), np.concatenate([ws, new_weights])
        df = int(np.count_nonzero(live[at])) if slots.n_dead else len(at)
        if df:
            terms.append(term)
            repeats.append(qtf)
            dfs.append(df)
            term_slots.append(at)
            term_weights.append(ws)
    if not terms:
        return KeywordHits([], [], 0.0)
    idfs = [scoring.idf(df, n, params) for df in dfs]
    max_score = scoring.max_score(idfs, repeats, params)
    factors = [q * i for q, i in zip(repeats, idfs, strict=True)]
    matched = QueryTerms(slots.slot_of, slots.size)
    matched.by_term = {term: (at, i) for term, at, i in zip(terms, term_slots, idfs, strict=True)}
    weights = np.concatenate(term_weights)
    weights *= np.repeat(np.asarray(factors, np.float32), [len(w) for w in term_weights])
    scores = np.bincount(np.concatenate(term_slots), weights=weights, minlength=slots.size)
    if slots.n_dead:
        scores[~live] = 0.0
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
