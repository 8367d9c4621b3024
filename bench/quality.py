"""Retrieval quality: our channels and fusions side by side with the peers' fusions, on the same
cached channel runs (groundwork for issue #6; the full benchmark command comes with it).

For each query of a BEIR folder it takes both channels' top-100 from the cached eval KB
(``python -m kb eval`` builds it), collapses chunks to documents (best chunk per document), and
scores every fusion on the same two lists:

- ours: ``rrf`` and ``weighted`` (0.7) exactly as ``kb.fusion`` computes them;
- peers, reimplemented from ``peer-baselines.md`` §3: RRF k=60 (ties: keyword list first),
  LlamaIndex ``relative_score`` (min-max, equal weights), LlamaIndex ``dist_based_score``
  (mean ± 3σ scaling), convex min-max with dense weight 0.7 (LanceDB linear).

    .venv/bin/python -m bench.quality ../shared/datasets/scifact --embedder minilm
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from kb.eval import corpus_kb_name, load_beir
from kb.fusion import rrf, weighted
from kb.metrics import mrr_at, ndcg_at, recall_at

Run = list[tuple[str, float]]  # (doc_id, score) best first


def _by_doc(ids: list[str], scores: list[float], doc_of: dict[str, str]) -> Run:
    best: dict[str, float] = {}
    for cid, s in zip(ids, scores, strict=True):
        d = doc_of[cid]
        if d not in best:
            best[d] = s
    return list(best.items())


def channel_runs(folder: Path, embedder: str, data_dir=None, split: str = "test", depth: int = 100) -> dict:
    """``{qid: {"semantic": run, "keyword": run}}`` with raw scores (cosine; BM25 and its max)."""
    from kb.embedders import make_embedder
    from kb.knowledge_base import Library

    corpus, queries, qrels = load_beir(folder, split)
    kb = Library(data_dir).get(corpus_kb_name(folder, corpus, embedder), make_embedder(embedder))
    doc_of = {}
    for ids, _, metas in kb.iter_chunks(include=["metadatas"]):
        doc_of.update((cid, m["doc_id"]) for cid, m in zip(ids, metas, strict=True))
    runs = {}
    for qid in sorted(q for q in qrels if q in queries):
        text = queries[qid]
        vector = kb.embedder.embed_query(text)
        got = kb.collection.query(query_embeddings=[vector], n_results=depth * 2, include=["distances"])
        sem = _by_doc(got["ids"][0], [1 - d for d in got["distances"][0]], doc_of)[:depth]
        hits = kb.keyword.search(kb.tokenizer(text), depth * 2)
        kw = _by_doc(hits.ids, hits.scores, doc_of)[:depth]
        runs[qid] = {"semantic": sem, "keyword": kw, "keyword_max": hits.max_score}
    return {"qrels": qrels, "runs": runs}


def _minmax(run: Run) -> dict[str, float]:
    if not run:
        return {}
    lo, hi = min(s for _, s in run), max(s for _, s in run)
    if hi == lo:
        return {d: (1.0 if hi > 0 else 0.0) for d, _ in run}
    return {d: (s - lo) / (hi - lo) for d, s in run}


def _dist(run: Run) -> dict[str, float]:
    if not run:
        return {}
    scores = [s for _, s in run]
    mean, std = statistics.fmean(scores), statistics.pstdev(scores)
    lo, hi = mean - 3 * std, mean + 3 * std
    if hi == lo:
        return {d: 1.0 for d, _ in run}
    return {d: (s - lo) / (hi - lo) for d, s in run}


def _combine(a: dict, b: dict, wa: float, wb: float) -> list[str]:
    fused: dict[str, float] = {}
    for d, s in a.items():
        fused[d] = fused.get(d, 0.0) + wa * s
    for d, s in b.items():
        fused[d] = fused.get(d, 0.0) + wb * s
    return sorted(fused, key=lambda d: -fused[d])


def _ranked(scores: dict[str, float]) -> list[str]:
    return sorted(scores, key=lambda d: -scores[d])


def _normalized_keyword(run: Run, max_score: float) -> Run:
    return [(d, min(1.0, s / max_score) if max_score else 0.0) for d, s in run]


FUSIONS: dict[str, Callable[[dict], list[str]]] = {
    "semantic only": lambda q: [d for d, _ in q["semantic"]],
    "keyword only": lambda q: [d for d, _ in q["keyword"]],
    "ours: rrf (default)": lambda q: _ranked(rrf([q["semantic"], q["keyword"]])),
    "ours: weighted 0.7": lambda q: _ranked(
        weighted(q["semantic"], _normalized_keyword(q["keyword"], q["keyword_max"]), 0.7)
    ),
    "peer: RRF k=60 (LangChain, LanceDB)": lambda q: _ranked(rrf([q["keyword"], q["semantic"]])),
    "peer: LlamaIndex relative_score": lambda q: _combine(_minmax(q["semantic"]), _minmax(q["keyword"]), 0.5, 0.5),
    "peer: LlamaIndex dist_based_score": lambda q: _combine(_dist(q["semantic"]), _dist(q["keyword"]), 0.5, 0.5),
    "peer: convex min-max 0.7 (LanceDB linear)": lambda q: _combine(
        _minmax(q["semantic"]), _minmax(q["keyword"]), 0.7, 0.3
    ),
}


def score(data: dict) -> list[dict]:
    qrels, runs = data["qrels"], data["runs"]
    rows = []
    for name, fusion in FUSIONS.items():
        ndcg = recall = mrr = 0.0
        for qid, q in runs.items():
            ranked = fusion(q)[:100]
            ndcg += ndcg_at(ranked, qrels[qid], 10)
            recall += recall_at(ranked, qrels[qid], 100)
            mrr += mrr_at(ranked, qrels[qid], 10)
        n = len(runs)
        rows.append({"method": name, "ndcg@10": round(ndcg / n, 4), "recall@100": round(recall / n, 4),
                     "mrr@10": round(mrr / n, 4)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--embedder", default="e5")
    parser.add_argument("--split", default="test")
    parser.add_argument("--data-dir")
    parser.add_argument("--runs", help="cache file for the channel runs (reused when it exists)")
    args = parser.parse_args(argv)
    folder = Path(args.dataset)
    cache = Path(args.runs) if args.runs else None
    if cache and cache.exists():
        data = json.loads(cache.read_text())
    else:
        data = channel_runs(folder, args.embedder, args.data_dir, args.split)
        if cache:
            cache.write_text(json.dumps(data))
    rows = score(data)
    print(f"{folder.name} ({args.embedder}, {args.split}, {len(data['runs'])} queries)\n")
    print("| method | nDCG@10 | R@100 | MRR@10 |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['ndcg@10']:.3f} | {r['recall@100']:.3f} | {r['mrr@10']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
