"""Retrieval quality: our channels and fusions beside the peers' fusions and reference BM25.

For each BEIR folder (default: scifact with MiniLM int8, medqa-zh with multilingual-e5-small) the
corpus is ingested once into an eval KB (``python -m kb eval`` builds the same one), then per query:

- ours, through ``kb.search`` exactly as users call it: semantic only, keyword only, the default
  hybrid, and every other fusion we ship;
- peers, reimplemented in ``bench/peers.py``, fusing the same two channel lists (each channel's
  top 100 documents): RRF k=60, LlamaIndex relative_score and dist_based_score, convex min-max 0.7,
  Dify's weighted score (0.7 cosine + 0.3 jieba keyword score over vector top-50 ∪ keyword top-50);
- reference BM25: ``bm25s`` (lucene, k1 1.5, b 0.75) over our own token lists (parity check).

Documents are ranked by their best chunk; metrics are nDCG@10, Recall@100, MRR@10 over the first
100 documents. Query vectors are cached under ``bench/results/cache`` (embedding is the slow part).

medqa-zh: the adaptive fusion weight was tuned on a fifth of its queries (``tuning_split``), so the
reported numbers use the other four fifths; scifact: tuned on ``qrels/train.tsv``, reported on test.

    .venv/bin/python -m bench quality [--dataset DIR --embedder NAME ...] [--queries N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench import peers
from bench.common import DATASETS, ROOT, report_table, write_json
from kb.fusion import DEFAULT_FUSION, FUSIONS
from kb.metrics import mrr_at, ndcg_at, recall_at
from kb.tokenize import index_text

# The sets the default fusion is judged on (issue 18): every shared set with its embedder.
DEFAULTS = [("scifact", "minilm"), ("trec-dl-2019-subset", "minilm"), ("medqa-zh", "e5"), ("cmrc2018", "e5")]
# ``--more``: sets measured beside them (not in the target means): Python's FAQ (built from the
# python3-doc package, ``bench/python_faq.py``) and the multilingual e5 on the English sets.
MORE = [("python-faq", "minilm"), ("python-faq", "e5"), ("trec-dl-2019-subset", "e5"), ("scifact", "e5")]
DEPTH = 100
TUNED_ON_A_FIFTH = {"medqa-zh", "python-faq"}  # sets whose tuning fifth (``tuning_split``) is left out of the report


DEFAULT_ROW = f"ours: hybrid, default ({DEFAULT_FUSION}, per-query weight)"
CHANNEL_ROWS = ("ours: semantic only", "ours: keyword only (BM25)")


def tuning_split(qid: str) -> bool:
    """The fifth of a set's queries (by a hash of the id) that tuned the default fusion."""
    return hashlib.sha1(qid.encode()).digest()[0] < 51


class CachedQueries:
    """The KB's embedder with query vectors cached on disk (same name and dimension)."""

    def __init__(self, inner, path: Path) -> None:
        self.inner, self.path = inner, path
        self.name, self.dimension = inner.name, inner.dimension
        self.batch_size = getattr(inner, "batch_size", 32)
        self.vectors: dict[str, np.ndarray] = {}
        if path.exists():
            data = np.load(path, allow_pickle=False)
            self.vectors = dict(zip(data["texts"].tolist(), data["vectors"], strict=True))
        self._dirty = False

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> np.ndarray:
        if text not in self.vectors:
            self.vectors[text] = np.asarray(self.inner.embed_query(text), np.float32)
            self._dirty = True
        return self.vectors[text]

    def save(self) -> None:
        if self._dirty and self.vectors:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            texts = list(self.vectors)
            np.savez(self.path, texts=np.array(texts), vectors=np.vstack([self.vectors[t] for t in texts]))


def _docs(hit_doc_ids: list[str]) -> list[str]:
    return list(dict.fromkeys(hit_doc_ids))[:DEPTH]


def _by_doc(pairs: list[tuple[str, float]], doc_of: dict[str, str]) -> list[tuple[str, float]]:
    best: dict[str, float] = {}
    for cid, s in pairs:
        best.setdefault(doc_of[cid], s)
    return list(best.items())[:DEPTH]


def read_chunks(kbase, with_vectors: bool = False) -> tuple[dict[str, str], dict[str, str], dict[str, list]]:
    """Every chunk's document id and indexed text (title, then content), and with ``with_vectors``
    each document's chunk vectors, read a page at a time (ids first: ``ChunkStore.pages``)."""
    include = ["documents", "metadatas"] + (["embeddings"] if with_vectors else [])
    doc_of: dict[str, str] = {}
    text_of: dict[str, str] = {}
    doc_vectors: dict[str, list[np.ndarray]] = {}
    for got in kbase.pages(include):
        for i, (cid, doc, meta) in enumerate(zip(got["ids"], got["documents"], got["metadatas"], strict=True)):
            doc_of[cid] = meta["doc_id"]
            text_of[cid] = index_text(str(meta.get("title", "")), doc or "")
            if with_vectors:
                doc_vectors.setdefault(meta["doc_id"], []).append(np.asarray(got["embeddings"][i], np.float32))
    return doc_of, text_of, doc_vectors


class Dataset:
    """One BEIR folder's eval KB, its queries and what every method ranks for them."""

    def __init__(self, folder: Path, embedder: str, data_dir, n_queries: int | None, progress) -> None:
        from kb.eval import prepare

        self.folder, self.embedder_name = folder, embedder
        started = time.perf_counter()
        self.kb, queries, qrels, self.embedded, _ = prepare(
            folder, data_dir=data_dir, embedder=embedder, progress=progress
        )
        self.build_s = time.perf_counter() - started
        qids = sorted(q for q in qrels if q in queries)
        self.split_note = "test"
        if folder.name in TUNED_ON_A_FIFTH:
            qids = [q for q in qids if not tuning_split(q)]
            self.split_note = "test minus the tuning fifth"
        if n_queries:
            qids = qids[:n_queries]
        self.qids, self.queries, self.qrels = qids, queries, qrels
        # A blank query (cmrc2018 has two) stays in the denominator: every method returns nothing for it.
        self.blank = {q for q in qids if not queries[q].strip()}
        if self.blank:
            self.split_note += f", {len(self.blank)} blank (no results from any method)"
        cache = ROOT / "bench" / "results" / "cache" / f"{self.kb.collection.name}-queries.npz"
        self.embedder = CachedQueries(self.kb.embedder, cache)
        self.doc_of, self.text_of_chunk, doc_vectors = read_chunks(self.kb, with_vectors=True)
        self.doc_matrix = {d: np.vstack(vs) for d, vs in doc_vectors.items()}  # each doc's chunk vectors

    def ours(self, **options) -> dict[str, list[str]]:
        out = {}
        for qid in self.qids:
            if qid in self.blank:
                out[qid] = []
                continue
            hits = self.kb.search(self.queries[qid], top_k=DEPTH, candidates=DEPTH, embedder=self.embedder, **options)
            out[qid] = _docs([h.doc_id for h in hits])
        return out

    def channels(self) -> dict[str, dict]:
        """Each query's two channel lists (documents, raw scores) as a peer system would get them."""
        runs = {}
        for qid in self.qids:
            text = self.queries[qid]
            if qid in self.blank:
                runs[qid] = {"semantic": [], "keyword": [], "vector": np.zeros(self.kb.embedder.dimension, np.float32)}
                continue
            vector = self.embedder.embed_query(text)
            got = self.kb.collection.query(query_embeddings=[vector], n_results=DEPTH * 2, include=["distances"])
            semantic = [(cid, 1 - d) for cid, d in zip(got["ids"][0], got["distances"][0], strict=True)]
            hits = self.kb.keyword.search(self.kb.tokenizer(text), DEPTH * 2)
            runs[qid] = {
                "semantic": _by_doc(semantic, self.doc_of),
                "keyword": _by_doc(list(zip(hits.ids, hits.scores, strict=True)), self.doc_of),
                "vector": vector,
            }
        return runs

    def bm25s_reference(self) -> dict[str, list[str]]:
        import bm25s

        ids = list(self.doc_of)
        vocab: dict[str, int] = {}
        token_ids = [[vocab.setdefault(t, len(vocab)) for t in self.kb.tokenizer(self.text_of_chunk[c])] for c in ids]
        ref = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
        ref.index(bm25s.tokenization.Tokenized(ids=token_ids, vocab=vocab), show_progress=False)
        out = {}
        for qid in self.qids:
            q = [vocab[t] for t in self.kb.tokenizer(self.queries[qid]) if t in vocab]
            if not q:
                out[qid] = []
                continue
            scores = ref.get_scores(q)
            top = np.argpartition(-scores, min(len(scores) - 1, DEPTH * 2))[: DEPTH * 2]
            top = top[np.argsort(-scores[top], kind="stable")]
            out[qid] = _docs([self.doc_of[ids[i]] for i in top if scores[i] > 0])
        return out

    def doc_texts(self) -> dict[str, str]:
        texts: dict[str, list[str]] = {}
        for cid, text in self.text_of_chunk.items():
            texts.setdefault(self.doc_of[cid], []).append(text)
        return {d: "\n".join(parts) for d, parts in texts.items()}

    def score(self, ranked: dict[str, list[str]]) -> dict:
        n = len(self.qids)
        per_query = [ndcg_at(ranked[q], self.qrels[q], 10) for q in self.qids]
        return {
            "ndcg@10": round(sum(per_query) / n, 4),
            "recall@100": round(sum(recall_at(ranked[q], self.qrels[q], 100) for q in self.qids) / n, 4),
            "mrr@10": round(sum(mrr_at(ranked[q], self.qrels[q], 10) for q in self.qids) / n, 4),
            "ndcg@10 per query": [round(v, 4) for v in per_query],  # in self.qids order
        }


def peer_rows(ds: Dataset) -> dict[str, dict[str, list[str]]]:
    runs = ds.channels()
    texts = ds.doc_texts()
    scorer = peers.DifyKeywordScorer()

    def cosine_for(vector) -> Callable[[str], float]:
        def cosine(doc: str) -> float:  # the document's best chunk, as the vector store returns it
            v = ds.doc_matrix[doc]
            return float(np.max(v @ vector / (np.linalg.norm(v, axis=1) * np.linalg.norm(vector))))

        return cosine

    rules: dict[str, Callable[[dict, str], list[str]]] = {
        "peer: RRF k=60 (Cormack; LangChain, LanceDB default)": lambda r, q: peers.rrf(r["keyword"], r["semantic"]),
        "peer: LlamaIndex relative_score": lambda r, q: peers.relative_score(r["semantic"], r["keyword"]),
        "peer: LlamaIndex dist_based_score": lambda r, q: peers.dist_based_score(r["semantic"], r["keyword"]),
        "peer: convex min-max 0.7 (Bruch et al.; LanceDB linear)": lambda r, q: peers.convex(
            r["semantic"], r["keyword"], 0.7
        ),
        "peer: Dify weighted score 0.7/0.3 (jieba keyword score, 50+50)": lambda r, q: peers.dify_weighted(
            ds.queries[q], r["semantic"], r["keyword"], cosine_for(r["vector"]), texts.__getitem__, scorer
        ),
    }
    return {name: {q: rule(runs[q], q)[:DEPTH] for q in ds.qids} for name, rule in rules.items()}


def evaluate(ds: Dataset) -> list[dict]:
    methods: dict[str, dict[str, list[str]]] = {
        "ours: semantic only": ds.ours(mode="semantic"),
        "ours: keyword only (BM25)": ds.ours(mode="keyword"),
        DEFAULT_ROW: ds.ours(mode="hybrid"),
    }
    for fusion in FUSIONS:
        if fusion != DEFAULT_FUSION:
            methods[f"ours: hybrid, {fusion}"] = ds.ours(mode="hybrid", fusion=fusion)
    methods["reference: bm25s over our tokens"] = ds.bm25s_reference()
    methods.update(peer_rows(ds))
    ds.embedder.save()
    return [{"method": name, **ds.score(ranked)} for name, ranked in methods.items()]


def _best(rows: list[dict], keep: Callable[[str], bool]) -> dict:
    return max((r for r in rows if keep(r["method"])), key=lambda r: r["ndcg@10"])


def _is_peer(method: str) -> bool:
    return method.startswith("peer:")


RESAMPLES = 2000  # the summary's bootstrap


def margin_interval(
    ours: list[float], other: list[float], resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """95 % paired-bootstrap interval of mean(ours − other) over the same queries: how far the
    set's queries can resolve a margin."""
    diff = np.asarray(ours, np.float64) - np.asarray(other, np.float64)
    picks = np.random.default_rng(seed).integers(0, len(diff), (resamples, len(diff)))
    means = diff[picks].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _margin(ours: dict, other: dict) -> str:
    text = f"{ours['ndcg@10'] - other['ndcg@10']:+.3f}"
    a, b = ours.get("ndcg@10 per query"), other.get("ndcg@10 per query")
    if not a or not b:
        return text
    lo, hi = margin_interval(a, b)
    return f"{text} [{lo:+.3f}, {hi:+.3f}]"


def table(ds: Dataset, rows: list[dict]) -> str:
    title = (
        f"**{ds.folder.name}** ({ds.embedder_name}, {len(ds.qids)} queries: {ds.split_note}; "
        f"{ds.kb.collection.count()} chunks)"
    )
    body = report_table(
        ["method", "nDCG@10", "R@100", "MRR@10"],
        [[r["method"], f"{r['ndcg@10']:.3f}", f"{r['recall@100']:.3f}", f"{r['mrr@10']:.3f}"] for r in rows],
    )
    return f"{title}\n\n{body}\n"


def summary(results: list[dict], targets: list[tuple[str, str]]) -> str:
    """Per set: best single channel, best peer fusion, our default and the margins; then the means
    over the target sets, against the one peer fusion with the best mean there."""
    lines = []
    for res in results:
        rows = res["rows"]
        ch, peer = _best(rows, CHANNEL_ROWS.__contains__), _best(rows, _is_peer)
        default = next(r for r in rows if r["method"] == DEFAULT_ROW)
        ours = default["ndcg@10"]
        mark = "" if (res["dataset"], res["embedder"]) in targets else " *"
        lines.append(
            [
                f"{res['dataset']} ({res['embedder']}){mark}",
                f"{ch['method'].removeprefix('ours: ')} {ch['ndcg@10']:.3f}",
                f"{peer['method'].removeprefix('peer: ')} {peer['ndcg@10']:.3f}",
                f"**{ours:.3f}**",
                _margin(default, ch),
                _margin(default, peer),
            ]
        )
    header = ["set", "best single channel", "best peer fusion", "ours, default", "− channel [95 %]", "− peer [95 %]"]
    out = report_table(header, lines)
    out += f"\n\n[95 %]: paired bootstrap over the set's queries ({RESAMPLES:,} resamples)."
    judged = [r for r in results if (r["dataset"], r["embedder"]) in targets]
    if len(judged) > 1:

        def mean_of(method: str) -> float:
            return sum(next(x for x in r["rows"] if x["method"] == method)["ndcg@10"] for r in judged) / len(judged)

        peer_names = [x["method"] for x in judged[0]["rows"] if _is_peer(x["method"])]
        best_peer = max(peer_names, key=mean_of)
        channel = sum(_best(r["rows"], CHANNEL_ROWS.__contains__)["ndcg@10"] for r in judged) / len(judged)
        ours = mean_of(DEFAULT_ROW)
        out += (
            f"\n\nMean over the {len(judged)} target sets: ours, default **{ours:.4f}**; best peer fusion "
            f"({best_peer.removeprefix('peer: ')}) {mean_of(best_peer):.4f} ({ours - mean_of(best_peer):+.4f}); "
            f"best single channel per set {channel:.4f} ({ours - channel:+.4f})."
        )
    if len(judged) < len(results):
        out += "\n\n\\* measured beside the targets, not in the mean."
    return out + "\n"


def _python_faq(data_root: Path) -> Path | None:
    from bench import python_faq

    src = python_faq.source_dir()
    if src is None:
        print("[quality] python-faq skipped: install Debian's python3-doc to build it", file=sys.stderr)
        return None
    folder = data_root / "python-faq"
    if not (folder / "corpus.jsonl").is_file():
        python_faq.build(src, folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench quality", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", help="a BEIR folder (repeatable; default: scifact and medqa-zh)")
    parser.add_argument("--embedder", action="append", help="embedder for each --dataset (default e5)")
    parser.add_argument("--more", action="store_true", help="also python-faq and e5 on the English sets")
    parser.add_argument("--queries", type=int, help="only the first N queries of each set (smoke runs)")
    parser.add_argument("--data-dir", help="where the eval KBs live (default: the usual data directory)")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "quality.json"))
    parser.add_argument(
        "--summarize", nargs="+", metavar="JSON", help="only print the summary of earlier runs' JSON files, as one run"
    )
    args = parser.parse_args(argv)
    if args.summarize:
        results = [res for path in args.summarize for res in json.loads(Path(path).read_text())["results"]]
        pairs = [(r["dataset"], r["embedder"]) for r in results]
        print(summary(results, [p for p in pairs if p in DEFAULTS] or pairs))
        return 0
    if args.dataset:
        embedders = args.embedder or []
        sets = [(Path(d), embedders[i] if i < len(embedders) else "e5") for i, d in enumerate(args.dataset)]
    else:
        sets = [(DATASETS / name, emb) for name, emb in DEFAULTS]
        if args.more:
            built = {"python-faq": _python_faq(ROOT / "bench" / "results" / "datasets")}
            sets += [(built.get(name, DATASETS / name), emb) for name, emb in MORE if built.get(name, True)]
    targets = [(f.name, e) for f, e in sets if (f.name, e) in DEFAULTS] or [(f.name, e) for f, e in sets]
    results, tables = [], []
    for folder, embedder in sets:
        t0 = time.perf_counter()

        def progress(done: int, total: int, name=folder.name) -> None:
            if done == total or done % 2000 < 50:
                print(f"[quality] {name}: embedded {done}/{total} chunks", file=sys.stderr)

        ds = Dataset(folder, embedder, args.data_dir, args.queries, progress)
        rows = evaluate(ds)
        tables.append(table(ds, rows))
        results.append(
            {
                "dataset": folder.name,
                "embedder": embedder,
                "queries": len(ds.qids),
                "split": ds.split_note,
                "chunks": ds.kb.collection.count(),
                "rows": rows,
            }
        )
        print(f"[quality] {folder.name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    write_json(args.json, {"benchmark": "quality", "argv": sys.argv, "results": results})
    print("\n".join(tables))
    print(summary(results, targets))
    return 0
