"""External Knowledge API latency through the plugin's stdio protocol at 10k and 100k chunks.

The corpus is real text (scifact + medqa-zh passages, replicated to size) with random unit vectors
(so building it costs no embedding time); the KB records the local ``e5`` model, so each query is
embedded by e5 inside the plugin, as in production. Reported per size, over real queries:
hybrid (query embedding included), keyword mode (no embedding), and e5 query-embedding time alone
measured in this process on the same queries (hybrid minus that approximates "embedding excluded").

    .venv/bin/python -m bench.endpoint_latency [--sizes 10000 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from bench.common import ROOT, corpus_passages, queries_from

sys.path.insert(0, str(ROOT / "tests"))

from dify_daemon import Backend, PluginDaemon

from kb.embedders import make_embedder
from kb.library import Library
from kb.metrics import percentile

KEY = "bench-key"


def build(lib: Library, name: str, size: int, texts: list[str], e5) -> None:
    kb = lib.create(name, e5)
    rng = np.random.default_rng(0)
    for start in range(0, size, 5000):
        n = min(5000, size - start)
        ids = [f"c{start + i}" for i in range(n)]
        docs = [f"{texts[(start + i) % len(texts)]} #{start + i}" for i in range(n)]
        vectors = rng.standard_normal((n, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        metas = [{"doc_id": f"d{(start + i) // 4}", "title": "", "position": (start + i) % 4} for i in range(n)]
        kb.write_chunks(ids, vectors, docs, metas)


def measure(daemon: PluginDaemon, kb: str, qs: list[str], mode: str) -> list[float]:
    settings = {"api_key": KEY, "mode": mode}
    times = []
    for q in qs:
        body = json.dumps({"retrieval_setting": {"top_k": 4, "score_threshold": 0.0}, "query": q, "knowledge_id": kb})
        t0 = time.perf_counter()
        status, _, payload, _ = daemon.http(
            "bench",
            settings,
            "/retrieval",
            body.encode(),
            {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
        )
        times.append((time.perf_counter() - t0) * 1000)
        assert status == 200, payload[:200]
        # Keyword mode may rightly find nothing (a query none of whose terms is in a small corpus).
        assert json.loads(payload)["records"] or mode == "keyword", payload[:200]
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "endpoint_latency.json"))
    args = parser.parse_args(argv)
    e5 = make_embedder("e5")
    texts = corpus_passages()
    qs = queries_from("scifact", args.queries // 2) + queries_from("medqa-zh", args.queries // 2)
    data_dir = Path(tempfile.mkdtemp(prefix="kb-bench-"))
    namespace = uuid.uuid4().hex
    lib = Library(data_dir / namespace)
    for size in args.sizes:
        t0 = time.perf_counter()
        build(lib, f"bench {size}", size, texts, e5)
        print(f"built {size} chunks in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    backend = Backend()
    backend.storage["bench"] = {"chroma_kb.namespace": namespace.encode()}
    daemon = PluginDaemon(ROOT, Path(sys.executable), backend, env={"CHROMA_KB_DATA_DIR": str(data_dir)})
    daemon.wait_ready()
    embed_ms = []
    for q in qs:
        t0 = time.perf_counter()
        e5.embed_query(q)
        embed_ms.append((time.perf_counter() - t0) * 1000)
    rows = []
    try:
        for size in args.sizes:
            kb = f"bench {size}"
            cold = measure(daemon, kb, qs[:1], "hybrid")[0]  # first request opens the KB
            measure(daemon, kb, qs[:10], "hybrid")  # warm-up
            hybrid = measure(daemon, kb, qs, "hybrid")
            keyword = measure(daemon, kb, qs, "keyword")
            rows.append(
                {
                    "chunks": size,
                    "queries": len(qs),
                    "first_request_ms": round(cold, 1),
                    "hybrid_p50_ms": round(percentile(hybrid, 50), 1),
                    "hybrid_p95_ms": round(percentile(hybrid, 95), 1),
                    "keyword_p50_ms": round(percentile(keyword, 50), 1),
                    "keyword_p95_ms": round(percentile(keyword, 95), 1),
                    "e5_query_embedding_p50_ms": round(percentile(embed_ms, 50), 1),
                    "e5_query_embedding_p95_ms": round(percentile(embed_ms, 95), 1),
                    "hybrid_minus_embedding_p50_ms": round(percentile(hybrid, 50) - percentile(embed_ms, 50), 1),
                }
            )
    finally:
        daemon.close()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    header = list(rows[0])
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(r[h]) for h in header) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
