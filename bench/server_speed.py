"""Server mode beside embedded mode and beside plain Chroma over HTTP, measured in the same run.

One ``chroma run`` from the venv on 127.0.0.1 (a free port); the speed benchmark's corpus (real
passages replicated to the size, pseudo-random vectors from the text: no model runs, the
stand-in embedder's time is taken out). Figures:

- ingest rate (chunks/s) of ``kb.ingest``: embedded / server mode; and of plain ``collection.add``
  of the same records over HTTP (the reference for the server);
- hybrid ``kb.search`` top 10, p50/p95 ms: embedded / server mode; plain Chroma over HTTP: the
  vector query top 100 alone (no keyword channel, no fusion);
- a second replica (own keyword directory): the time its first open takes (the keyword index
  built from the server), and the keyword catch-up delay: from another replica's ingest of 100
  chunks returning to the second replica's first keyword search that finds them (searching every
  50 ms, ``CHROMA_KB_SYNC_INTERVAL`` at its default).

    nice -n 10 .venv/bin/python -m bench server [--size 100000] [--queries 200]
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import ROOT, queries_from, write_json
from bench.speed import BATCH, HashEmbedder, _ms, passages, raw_add


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(path: Path) -> tuple[subprocess.Popen, int]:
    import httpx

    from kb.local_server import chroma_executable

    port = _free_port()
    process = subprocess.Popen(
        [chroma_executable(), "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).status_code == 200:
                return process, port
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("chroma run did not start")


def _hybrid_ms(kb, queries: list[str]) -> tuple[float, float]:
    kb.search(queries[0], top_k=10)  # warm
    times = []
    for q in queries:
        t0 = time.perf_counter()
        kb.search(q, top_k=10)
        times.append(time.perf_counter() - t0)
    return _ms(times)


def _ingest(library, texts: list[str]) -> tuple[object, float]:
    from kb.documents import SourceDocument

    embedder = HashEmbedder()
    kb = library.create("bench", embedder)
    docs = [SourceDocument(text=t, doc_id=f"d{i}", title="", source="bench") for i, t in enumerate(texts)]
    t0 = time.perf_counter()
    report = kb.ingest(docs, batch_size=BATCH)
    seconds = time.perf_counter() - t0 - embedder.seconds
    assert report.added == len(texts), report
    return kb, seconds


def run(size: int, n_queries: int, workdir: Path) -> dict:
    import chromadb

    from kb.documents import SourceDocument
    from kb.library import HNSW, Library
    from kb.server_store import ServerConfig, ServerStore
    from kb.store import Store

    texts = passages(size)
    queries = queries_from("scifact", n_queries // 2) + queries_from("medqa-zh", n_queries - n_queries // 2)
    out: dict = {"size": size, "queries": len(queries)}

    embedded_kb, seconds = _ingest(Library(store=Store(workdir / "embedded")), texts)
    out["embedded_ingest_per_s"] = round(size / seconds)
    out["embedded_hybrid_ms"] = _hybrid_ms(embedded_kb, queries)

    process, port = _start_server(workdir / "server")
    try:
        url = f"http://127.0.0.1:{port}"
        config = ServerConfig.parse(url)

        # plain Chroma over HTTP: the same records, then vector queries
        settings = chromadb.Settings(anonymized_telemetry=False)
        client = chromadb.HttpClient(host="127.0.0.1", port=port, settings=settings)
        col = client.create_collection("plain", configuration={"hnsw": HNSW}, embedding_function=None)
        vectors = np.vstack([HashEmbedder.vector(t) for t in texts])
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        meta = {"title": "", "source": "bench", "ingested_at": stamp, "position": 0}
        metas = [{"doc_id": f"d{i}", **meta} for i in range(size)]
        step = int(client.get_max_batch_size())
        t0 = time.perf_counter()
        raw_add(col, vectors, texts, metas, step)
        out["plain_http_add_per_s"] = round(size / (time.perf_counter() - t0))
        qv = [HashEmbedder.vector(q) for q in queries]
        times = []
        for v in qv:
            t0 = time.perf_counter()
            col.query(query_embeddings=[v], n_results=100, include=["distances"])
            times.append(time.perf_counter() - t0)
        out["plain_http_query_top100_ms"] = _ms(times)

        server_a = Library(store=ServerStore(config, workdir / "replica-a", database="bench"))
        server_kb, seconds = _ingest(server_a, texts)
        out["server_ingest_per_s"] = round(size / seconds)
        out["server_hybrid_ms"] = _hybrid_ms(server_kb, queries)
        hits_embedded = [[h.id for h in embedded_kb.search(q, top_k=10)] for q in queries[:20]]
        hits_server = [[h.id for h in server_kb.search(q, top_k=10)] for q in queries[:20]]
        # HNSW graphs are built nondeterministically (threads), so approximate neighbours may differ
        overlap = [len(set(a) & set(b)) / max(1, len(a)) for a, b in zip(hits_embedded, hits_server, strict=True)]
        out["top10_overlap_with_embedded"] = round(sum(overlap) / len(overlap), 3)

        # a second replica: its first open builds its keyword index from the server
        t0 = time.perf_counter()
        replica_b = Library(store=ServerStore(config, workdir / "replica-b", database="bench")).get("bench")
        out["second_replica_first_open_s"] = round(time.perf_counter() - t0, 2)
        replica_b.search("warm", top_k=1, mode="keyword")
        delays = []
        for round_ in range(5):
            word = f"zqxbench{round_}"
            docs = [SourceDocument(text=f"{word} extra note {i}", doc_id=f"x{round_}-{i}") for i in range(100)]
            server_kb.ingest(docs)
            written = time.perf_counter()
            while not replica_b.search(word, top_k=1, mode="keyword"):
                time.sleep(0.05)
            delays.append(time.perf_counter() - written)
            time.sleep(0.3)  # searches at other moments of the poll interval
        out["keyword_catch_up_s"] = {
            "interval": float(os.environ.get("CHROMA_KB_SYNC_INTERVAL", "1") or 1),
            "max": round(max(delays), 2),
            "mean": round(sum(delays) / len(delays), 2),
        }
    finally:
        process.terminate()
        process.wait(30)
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench server", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "server.json"))
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="chroma_kb-bench-server-"))
    try:
        result = run(args.size, args.queries, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result, indent=2))
    write_json(Path(args.json), result)
    return 0
