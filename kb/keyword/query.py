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
    slots, n = state.slots, state.slots.count
    query = Counter(t for t in tokens if t in state.vocab)
    if not n or not query or limit <= 0:
        return KeywordHits([], [], 0.0)
    weigh = state.weigh(params)
    matched = QueryTerms(slots.slot_of, slots.size)
    live = slots.live
    term_slots, term_weights, factors, idfs, repeats = [], [], [], [], []
    for term, qtf in query.items():
        tid = state.vocab.ids[term]
        base_slots, base_weights = state.base.postings(tid, state.avgdl, weigh)
        new_slots, new_weights = state.delta.postings(tid, weigh)
        at, ws = base_slots, base_weights
        if len(new_slots):
            at, ws = np.concatenate([base_slots, new_slots]), np.concatenate([base_weights, new_weights])
        df = int(np.count_nonzero(live[at])) if slots.n_dead else len(at)
        if df == 0:
            continue
        idf = scoring.idf(df, n, params)
        matched.by_term[term] = (at, idf)
        term_slots.append(at)
        term_weights.append(ws)
        factors.append(qtf * idf)
        idfs.append(idf)
        repeats.append(qtf)
    max_score = scoring.max_score(idfs, repeats, params)
    if not term_slots:
        return KeywordHits([], [], max_score)
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
