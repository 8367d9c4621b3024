"""Speed and footprint at 10k / 100k chunks, each figure beside a reference measured in the same run.

The corpus is real text (scifact + medqa-zh passages, cut to chunk size and replicated to the
target size, each copy tagged) with pseudo-random unit 384-d vectors derived from the text, so no
model runs: embedding time is excluded (the stand-in embedder's own time is reported apart).

Ours beside the reference, measured in the same run:

- ``kb.ingest`` of the passages (chunk, hash, tokenize, upsert, keyword index; the stand-in
  embedder's time taken out) / raw ``collection.add`` of the same records (vectors, texts, ids of
  the same length and the same metadata fields);
- keyword search, top 100 / ``bm25s`` (lucene, k1 1.5, b 0.75) on the same token lists, top 100;
- hybrid ``kb.search``, top 10 / Chroma query top 100 + bm25s top 100 + RRF + fetching the 10
  winners' texts;
- adding 1,000 chunks to the keyword index / rebuilding the keyword index from scratch;
- cold open to the first hybrid answer in a fresh process / the same with the Chroma collection;
- peak RSS of a process that opens the KB and answers the queries / the same with Chroma alone;
- disk: Chroma + keyword index / Chroma alone;
- filtered keyword and hybrid search (a ``bucket`` field matching 50 %, 5 % and 0.1 % of the
  chunks) / the same search unfiltered.

    .venv/bin/python -m bench speed [--sizes 10000 100000] [--queries 200]

``--no-reference`` measures ours alone (no raw Chroma store, no bm25s, no keyword rebuild): about
half the time of a full run at 1M, for the figures that need no reference (filtered searches
against the same search unfiltered, hybrid p50/p95, cold open, peak RSS, disk); the table shows
"—" where a reference would stand.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import ROOT, corpus_passages, queries_from, report_table, write_json
from kb.metrics import percentile

DIM = 384
BATCH = 5000
PASSAGE_CHARS = 600


class HashEmbedder:
    """Deterministic pseudo-random unit vectors from the text: no model, near-zero cost."""

    name = "bench-hash"
    dimension = DIM
    batch_size = 256

    def __init__(self) -> None:
        self.seconds = 0.0

    @staticmethod
    def vector(text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
        v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
        return v / np.linalg.norm(v)

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        t0 = time.perf_counter()
        out = np.vstack([self.vector(t) for t in texts]) if texts else np.zeros((0, DIM), np.float32)
        self.seconds += time.perf_counter() - t0
        return out

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


FILTERS = {"50%": {"bucket": {"$lt": 500}}, "5%": {"bucket": {"$lt": 50}}, "0.1%": {"bucket": {"$lt": 1}}}


def bucket(i: int) -> int:
    """0..999, each value for 0.1 % of the chunks (7919 is prime to 1000)."""
    return i * 7919 % 1000


def passages(size: int) -> list[str]:
    base = corpus_passages(PASSAGE_CHARS)
    return [f"{base[i % len(base)]} #{i}" for i in range(size)]


def raw_add(col, vectors, texts: list[str], metas: list[dict], step: int) -> None:
    """The reference: plain Chroma ``add`` of the same vectors, texts and metadata, ``step`` at a time."""
    size = len(texts)
    for s in range(0, size, step):
        col.add(
            ids=[f"{i:032x}" for i in range(s, min(size, s + step))],
            embeddings=vectors[s : s + step],
            documents=texts[s : s + step],
            metadatas=metas[s : s + step],
        )


def _ms(seconds: list[float]) -> tuple[float, float]:
    ms = [s * 1000 for s in seconds]
    return round(percentile(ms, 50), 3), round(percentile(ms, 95), 3)


def _timed(fn, items) -> list[float]:
    out = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        out.append(time.perf_counter() - t0)
    return out


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; ru_maxrss would include the parent's, from fork)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def _subprocess_json(code: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, check=False, timeout=600
    )
    if out.returncode:
        raise RuntimeError(f"benchmark subprocess failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# The two cold-start / memory probes run in fresh interpreters; they print one JSON line.
_CHROMA_PROBE = """
import json, sys, time
t0 = time.perf_counter()
import chromadb, numpy as np
from bench.speed import HashEmbedder
t_import = time.perf_counter() - t0
path, name, queries = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
vectors = [HashEmbedder.vector(q) for q in queries]
t1 = time.perf_counter()
col = chromadb.PersistentClient(path).get_collection(name)
col.query(query_embeddings=[vectors[0]], n_results=10, include=["documents", "metadatas", "distances"])
first = time.perf_counter() - t1
for v in vectors:
    col.query(query_embeddings=[v], n_results=100, include=["distances"])
from bench.speed import peak_rss_mb
print(json.dumps({"import_s": t_import, "first_answer_s": first, "peak_rss_mb": peak_rss_mb()}))
"""

_KB_PROBE = """
import json, sys, time
t0 = time.perf_counter()
import chromadb
from kb.library import Library
from bench.speed import HashEmbedder
t_import = time.perf_counter() - t0
path, name, queries = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
t1 = time.perf_counter()
kb = Library(path).get(name, HashEmbedder())
kb.search(queries[0], top_k=10)
first = time.perf_counter() - t1
for q in queries:
    kb.search(q, top_k=10)
from bench.speed import peak_rss_mb
print(json.dumps({"import_s": t_import, "first_answer_s": first, "peak_rss_mb": peak_rss_mb()}))
"""


def _note(size: int, text: str) -> None:
    """Progress on stderr: a long run shows each figure as soon as it is measured."""
    print(f"[speed {size:,}] {text}", file=sys.stderr, flush=True)


def build_stores(size: int, texts: list[str], workdir: Path, reference: bool = True) -> dict:
    """Both stores of ``size`` chunks, built and timed: the raw Chroma reference (unless not
    ``reference``) and our KB. The figures are saved beside them (``build-<size>.json``) so that
    ``--reuse`` can measure the query side again on the same stores."""
    import chromadb

    from kb.documents import SourceDocument
    from kb.library import HNSW, Library

    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    # The records our ingest writes: 32-character ids, these five metadata fields.
    metas = [
        {"doc_id": f"d{i}", "title": "", "source": "bench", "ingested_at": stamp, "position": 0, "bucket": bucket(i)}
        for i in range(size)
    ]
    ref_add_s = None
    if reference:  # raw Chroma add of the same vectors, texts and metadata
        vectors = np.vstack([HashEmbedder.vector(t) for t in texts])
        col = chromadb.PersistentClient(str(workdir / f"chroma-{size}")).create_collection(
            "bench", configuration={"hnsw": HNSW}, embedding_function=None
        )
        t0 = time.perf_counter()
        raw_add(col, vectors, texts, metas, BATCH)
        ref_add_s = round(time.perf_counter() - t0, 2)
        _note(size, f"raw Chroma add {ref_add_s:.1f} s")
        del vectors

    # Ours: the full ingest path.
    embedder = HashEmbedder()
    kb = Library(workdir / f"kb-{size}").create("bench", embedder)
    docs = [
        SourceDocument(text=t, doc_id=f"d{i}", title="", source="bench", metadata={"bucket": bucket(i)})
        for i, t in enumerate(texts)
    ]
    t0 = time.perf_counter()
    report = kb.ingest(docs, batch_size=BATCH)
    ingest_s = time.perf_counter() - t0 - embedder.seconds  # embedding is excluded (reported apart)
    assert report.added == size, report
    _note(size, f"ingest {ingest_s:.1f} s (stand-in embedder {embedder.seconds:.1f} s apart)")
    stored = kb.collection.get(limit=1, include=["metadatas"])["metadatas"][0]
    assert stored.keys() == metas[0].keys(), f"the reference must store what the ingest stores: {stored}"
    built = {
        "ingest_s": round(ingest_s, 2),
        "ref_chroma_add_s": ref_add_s,
        "stand_in_embedder_s": round(embedder.seconds, 2),
        "built_at": stamp,
        "built_by": git_commit(),
    }
    write_json(str(workdir / f"build-{size}.json"), built)
    return built


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=False)
    return out.stdout.strip() or "unknown"


def run_size(size: int, queries: list[str], workdir: Path, reuse: bool = False, reference: bool = True) -> dict:
    from kb.library import Library

    texts = passages(size)
    saved = workdir / f"build-{size}.json"
    if reuse and saved.exists():
        built = json.loads(saved.read_text())
        _note(size, f"reusing the stores built by {built['built_by']} at {built['built_at']}")
    else:
        built = build_stores(size, texts, workdir, reference)
    ref_dir, kb_dir = workdir / f"chroma-{size}", workdir / f"kb-{size}"
    if reference and built["ref_chroma_add_s"] is None:
        raise SystemExit(f"{saved} was built with --no-reference: measure it with --no-reference, or build again")
    t0 = time.perf_counter()
    kb = Library(kb_dir).get("bench", HashEmbedder())
    kb.search(queries[0], top_k=10)  # a new format's index is rebuilt here (reuse across formats)
    _note(size, f"opened our KB in {time.perf_counter() - t0:.1f} s")
    ingest_s, ref_add_s = built["ingest_s"], built["ref_chroma_add_s"]
    q_tokens = [kb.tokenizer(q) for q in queries]
    q_vectors = {q: HashEmbedder.vector(q) for q in queries}
    ref: dict = dict.fromkeys(REFERENCE_KEYS)

    for qt in q_tokens[:10]:  # warm-up
        kb.keyword.search(qt, 100)
    for q in queries[:10]:
        kb.search(q, top_k=10)
    if reference:
        import bm25s  # the references' libraries: not needed to measure ours alone
        import chromadb

        col = chromadb.PersistentClient(str(ref_dir)).get_collection("bench")
        # The keyword channel's reference: bm25s on the same token lists.
        tokens = kb.tokenizer.tokenize_many(texts)
        vocab: dict[str, int] = {}
        ids = [[vocab.setdefault(t, len(vocab)) for t in doc] for doc in tokens]
        del tokens
        t0 = time.perf_counter()
        ref_bm25 = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
        ref_bm25.index(bm25s.tokenization.Tokenized(ids=ids, vocab=vocab), show_progress=False)
        ref["ref_bm25s_index_s"] = round(time.perf_counter() - t0, 2)
        q_ids = [[vocab[t] for t in qt if t in vocab] or [0] for qt in q_tokens]

        def bm25s_top(qi: list[int]) -> tuple[np.ndarray, np.ndarray]:
            scores = ref_bm25.get_scores(qi)
            top = np.argpartition(-scores, 100)[:100]
            return top[np.argsort(-scores[top])], scores

        # The hybrid reference: the minimal Chroma + bm25s + RRF pipeline.
        def reference_hybrid(i: int) -> None:
            got = col.query(query_embeddings=[q_vectors[queries[i]]], n_results=100, include=["distances"])
            top, _ = bm25s_top(q_ids[i])
            fused: dict[str, float] = {}
            for run in (got["ids"][0], [f"{j:032x}" for j in top]):
                for rank, cid in enumerate(run, 1):
                    fused[cid] = fused.get(cid, 0.0) + 1 / (60 + rank)
            col.get(ids=sorted(fused, key=fused.__getitem__, reverse=True)[:10], include=["documents", "metadatas"])

        for i in range(10):  # warm-up
            bm25s_top(q_ids[i])
            reference_hybrid(i)
        ref_kw = _timed(bm25s_top, q_ids)
        ref_hybrid = _timed(reference_hybrid, range(len(queries)))
        ref["ref_bm25s_p50_ms"], ref["ref_bm25s_p95_ms"] = _ms(ref_kw)
        ref["ref_chroma_bm25s_p50_ms"], ref["ref_chroma_bm25s_p95_ms"] = _ms(ref_hybrid)
    ours_kw = _timed(lambda qt: kb.keyword.search(qt, 100), q_tokens)
    ours_hybrid = _timed(lambda q: kb.search(q, top_k=10), queries)
    _note(size, f"hybrid p50/p95 {_ms(ours_hybrid)} ms, reference {ref['ref_chroma_bm25s_p50_ms']} ms p50")

    # Filtered search beside the same search unfiltered, interleaved query by query (the machine's
    # load moves all of them alike).
    labelled = [("none", None), *FILTERS.items()]
    variants = [(mode, label, where) for mode in ("keyword", "hybrid") for label, where in labelled]
    times: dict[tuple[str, str], list[float]] = {(mode, label): [] for mode, label, _ in variants}
    for i, q in enumerate(queries[:10] + queries):
        for mode, label, where in variants:
            t0 = time.perf_counter()
            kb.search(q, top_k=10, mode=mode, where=where)
            if i >= 10:  # the first ten warm up
                times[(mode, label)].append(time.perf_counter() - t0)
    filtered: dict[str, float] = {}
    for mode, label, _ in variants:
        p50, p95 = _ms(times[(mode, label)])
        filtered[f"{mode}_{label}_p50_ms"], filtered[f"{mode}_{label}_p95_ms"] = p50, p95
        if label != "none":
            ratio = percentile(times[(mode, label)], 50) / percentile(times[(mode, "none")], 50)
            filtered[f"{mode}_{label}_p50_ratio"] = round(ratio, 3)

    _note(size, f"filtered {filtered}")

    # Adding 1,000 chunks to the keyword index vs rebuilding it.
    extra = [f"{t} +{i}" for i, t in enumerate(passages(1000))]
    extra_tokens = kb.tokenizer.tokenize_many(extra)
    t0 = time.perf_counter()
    kb.keyword.apply(upserts=[(f"x{i}", t) for i, t in enumerate(extra_tokens)])
    add_1k_s = time.perf_counter() - t0
    kb.keyword.apply(deletes=[f"x{i}" for i in range(1000)])
    if reference:
        t0 = time.perf_counter()
        kb.rebuild_keyword_index()
        ref["keyword_rebuild_s"] = round(time.perf_counter() - t0, 2)
        ref["add_1k_share_of_rebuild"] = round(add_1k_s / ref["keyword_rebuild_s"], 4)

    # Fresh processes: cold start and peak memory.
    sample = json.dumps(queries)
    if reference:
        ref_probe = _subprocess_json(_CHROMA_PROBE, str(ref_dir), "bench", sample)
        ref["ref_cold_first_answer_s"] = round(ref_probe["first_answer_s"], 3)
        ref["ref_import_s"] = round(ref_probe["import_s"], 3)
        ref["ref_peak_rss_mb"] = round(ref_probe["peak_rss_mb"], 1)
        ref["ref_disk_mb"] = round(_du(ref_dir) / 2**20, 1)
    our_probe = _subprocess_json(_KB_PROBE, str(kb_dir), "bench", sample)

    def ratio(ours: float, key: str, digits: int = 3) -> float | None:
        return None if ref[key] is None else round(ours / ref[key], digits)

    (kw50, kw95), (hy50, hy95) = _ms(ours_kw), _ms(ours_hybrid)
    return {
        "chunks": size,
        "queries": len(queries),
        "ingest_s": ingest_s,
        "ingest_ratio": None if ref_add_s is None else round(ingest_s / ref_add_s, 3),
        "stand_in_embedder_s": built["stand_in_embedder_s"],
        "built_by": built["built_by"],
        "measured_by": git_commit(),
        "keyword_p50_ms": kw50,
        "keyword_p95_ms": kw95,
        "keyword_p50_ratio": ratio(kw50, "ref_bm25s_p50_ms"),
        "hybrid_p50_ms": hy50,
        "hybrid_p95_ms": hy95,
        "hybrid_p50_ratio": ratio(hy50, "ref_chroma_bm25s_p50_ms"),
        "keyword_add_1k_s": round(add_1k_s, 3),
        "cold_first_answer_s": round(our_probe["first_answer_s"], 3),
        "import_s": round(our_probe["import_s"], 3),
        "peak_rss_mb": round(our_probe["peak_rss_mb"], 1),
        "rss_ratio": ratio(our_probe["peak_rss_mb"], "ref_peak_rss_mb"),
        **filtered,
        "disk_mb": round(_du(kb_dir) / 2**20, 1),
        **ref,
        "ref_chroma_add_s": ref_add_s,
    }


# The figures only a reference run measures (None with --no-reference).
REFERENCE_KEYS = (
    "ref_bm25s_index_s",
    "ref_bm25s_p50_ms",
    "ref_bm25s_p95_ms",
    "ref_chroma_bm25s_p50_ms",
    "ref_chroma_bm25s_p95_ms",
    "keyword_rebuild_s",
    "add_1k_share_of_rebuild",
    "ref_cold_first_answer_s",
    "ref_import_s",
    "ref_peak_rss_mb",
    "ref_disk_mb",
)

ROWS = [
    ("ingest, s (ratio to raw Chroma add; target ≤ 1.2)", "ingest_s", "ref_chroma_add_s", "ingest_ratio"),
    ("keyword query p50 ms (ratio to bm25s; target ≤ 1.5)", "keyword_p50_ms", "ref_bm25s_p50_ms", "keyword_p50_ratio"),
    ("keyword query p95 ms", "keyword_p95_ms", "ref_bm25s_p95_ms", None),
    (
        "hybrid query p50 ms (ratio to Chroma + bm25s; target ≤ 1.3)",
        "hybrid_p50_ms",
        "ref_chroma_bm25s_p50_ms",
        "hybrid_p50_ratio",
    ),
    ("hybrid query p95 ms", "hybrid_p95_ms", "ref_chroma_bm25s_p95_ms", None),
    (
        "add 1k chunks to the keyword index, s (share of a full rebuild; target ≤ 0.05)",
        "keyword_add_1k_s",
        "keyword_rebuild_s",
        "add_1k_share_of_rebuild",
    ),
    ("cold open → first hybrid answer, s (target ≤ 1)", "cold_first_answer_s", "ref_cold_first_answer_s", None),
    ("import time, s", "import_s", "ref_import_s", None),
    ("peak RSS MB (ratio to Chroma alone; target ≤ 1.3)", "peak_rss_mb", "ref_peak_rss_mb", "rss_ratio"),
    ("disk MB", "disk_mb", "ref_disk_mb", None),
]


for _mode in ("keyword", "hybrid"):
    for _label in FILTERS:
        ROWS.append(
            (
                f"{_mode} search filtered to {_label} p50 ms (ratio to unfiltered; target ≤ 2)",
                f"{_mode}_{_label}_p50_ms",
                f"{_mode}_none_p50_ms",
                f"{_mode}_{_label}_p50_ratio",
            )
        )


def table(results: list[dict]) -> str:
    header = ["measure"] + [f"{r['chunks']:,} chunks: ours / reference / ratio" for r in results]
    lines = []
    for label, ours, ref, ratio in ROWS:
        cells = []
        for r in results:
            value = f"{r[ours]} / {'—' if r[ref] is None else r[ref]}"
            if ratio:
                value += f" / **{r[ratio]}**" if r[ratio] is not None else " / —"
            else:
                value += f" / {r[ours] / r[ref]:.2f}" if r[ref] else ""
            cells.append(value)
        lines.append([label, *cells])
    return report_table(header, lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench speed", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200, help="real queries, half scifact, half medqa-zh")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "speed.json"))
    parser.add_argument("--workdir", help="where to build the stores (default: a temporary directory, removed)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="with --workdir: measure again on the stores an earlier run built there (its build figures kept)",
    )
    parser.add_argument(
        "--no-reference",
        action="store_true",
        help="measure ours alone: no raw Chroma store, no bm25s, no keyword rebuild (about half the time)",
    )
    args = parser.parse_args(argv)
    if args.reuse and not args.workdir:
        parser.error("--reuse needs --workdir: the folder where an earlier run built its stores")
    queries = queries_from("scifact", args.queries // 2) + queries_from("medqa-zh", args.queries - args.queries // 2)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="kb-bench-speed-"))
    results = []
    try:
        for size in args.sizes:
            t0 = time.perf_counter()
            results.append(run_size(size, queries, workdir, args.reuse, not args.no_reference))
            print(f"[speed] {size:,} chunks measured in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    write_json(args.json, {"benchmark": "speed", "argv": sys.argv, "results": results})
    print(table(results))
    return 0
