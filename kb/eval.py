"""``python -m kb eval``: retrieval quality of a KB built from any BEIR-layout folder.

The corpus is ingested into a KB named after the folder, its size and the embedder, in the given
data directory; a second run finds every chunk already there and embeds nothing.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from pathlib import Path

from kb.documents import SourceDocument
from kb.errors import InvalidInput
from kb.fusion import DEFAULT_FUSION
from kb.metrics import mrr_at, ndcg_at, percentile, recall_at


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise InvalidInput(f"{path} is missing; a BEIR folder has corpus.jsonl, queries.jsonl and qrels/<split>.tsv.")
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise InvalidInput(f"{path}, line {n}: invalid JSON ({exc.msg}).") from exc
    return rows


def load_beir(folder: Path, split: str = "test") -> tuple[list[dict], dict[str, str], dict[str, dict[str, int]]]:
    if not folder.is_dir():
        raise InvalidInput(f"{folder}: no such dataset folder.")
    corpus = _jsonl(folder / "corpus.jsonl")
    queries = {str(q["_id"]): q["text"] for q in _jsonl(folder / "queries.jsonl")}
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise InvalidInput(f"{qrels_path} is missing.")
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) < 3 or row[0] == "query-id":
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return corpus, queries, qrels


def corpus_kb_name(folder: Path, corpus: list[dict], embedder: str) -> str:
    digest = hashlib.sha256(f"{folder.resolve()}:{len(corpus)}:{(folder / 'corpus.jsonl').stat().st_size}".encode())
    return f"eval {folder.name} {embedder} {digest.hexdigest()[:8]}"


def prepare(folder: Path, *, data_dir=None, embedder: str = "e5", split: str = "test", progress=None):
    """Open (building it the first time) the KB of a BEIR folder. Returns
    ``(kb, queries, qrels, newly embedded chunks, ingest seconds)``."""
    from kb.embedders import make_embedder
    from kb.library import Library

    corpus, queries, qrels = load_beir(folder, split)
    kb = Library(data_dir).get_or_create(corpus_kb_name(folder, corpus, embedder), make_embedder(embedder))
    docs = [
        SourceDocument(
            text=str(d.get("text", "")), doc_id=str(d["_id"]), title=str(d.get("title") or ""), source=folder.name
        )
        for d in corpus
        if str(d.get("text", "")).strip() or str(d.get("title", "")).strip()
    ]
    started = time.perf_counter()
    report = kb.ingest(docs, progress=progress)
    return kb, queries, qrels, report.added, time.perf_counter() - started


def evaluate(
    folder: Path,
    *,
    data_dir=None,
    embedder: str = "e5",
    mode: str = "hybrid",
    fusion: str = DEFAULT_FUSION,
    n_queries: int | None = None,
    split: str = "test",
    progress=None,
    **search_options,
) -> dict:
    kb, queries, qrels, added, ingest_s = prepare(
        folder, data_dir=data_dir, embedder=embedder, split=split, progress=progress
    )
    qids = sorted(q for q in qrels if q in queries)
    if n_queries:
        qids = qids[:n_queries]
    if not qids:
        raise InvalidInput(f"No query in {split}.tsv has a text in queries.jsonl.")
    ndcg, recall, mrr, latency = [], [], [], []
    for qid in qids:
        t0 = time.perf_counter()
        blank = not queries[qid].strip()  # stays in the denominator: no method answers a blank query
        hits = (
            []
            if blank
            else kb.search(queries[qid], top_k=100, mode=mode, fusion=fusion, candidates=100, **search_options)
        )
        latency.append((time.perf_counter() - t0) * 1000)
        ranked = list(dict.fromkeys(h.doc_id for h in hits))
        ndcg.append(ndcg_at(ranked, qrels[qid], 10))
        recall.append(recall_at(ranked, qrels[qid], 100))
        mrr.append(mrr_at(ranked, qrels[qid], 10))
    n = len(qids)
    return {
        "dataset": folder.name,
        "split": split,
        "embedder": embedder,
        "mode": mode,
        "fusion": fusion if mode == "hybrid" else None,
        "queries": n,
        "ndcg@10": round(sum(ndcg) / n, 4),
        "recall@100": round(sum(recall) / n, 4),
        "mrr@10": round(sum(mrr) / n, 4),
        "latency_ms_p50": round(percentile(latency, 50), 2),
        "latency_ms_p95": round(percentile(latency, 95), 2),
        "chunks": kb.collection.count(),
        "embedded_now": added,
        "ingest_seconds": round(ingest_s, 1),
    }
