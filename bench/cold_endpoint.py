"""The External Knowledge API's first request after a restart, at 100k chunks: Dify gives up after 5 s.

Builds a KB like ``bench.endpoint_latency`` (real text, random unit vectors, the local e5 model
recorded), then starts a fresh plugin process (``python -m main`` over the stdio protocol) and
times its first request, twice: with the keyword index intact, and with the keyword index removed
(as after a crash or an index-format change), when it must be rebuilt. It also times what the
first request cost before the rebuild moved to the background: opening the KB with a synchronous
rebuild, in this process.

    .venv/bin/python -m bench.cold_endpoint [--chunks 100000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import ROOT, corpus_passages, queries_from
from bench.endpoint_latency import KEY, build

sys.path.insert(0, str(ROOT / "tests"))

from dify_daemon import Backend, PluginDaemon

from kb.embedders import make_embedder
from kb.knowledge_base import Library


def first_request(data_dir: Path, namespace: str, kb: str, query: str) -> tuple[float, dict, PluginDaemon]:
    backend = Backend()
    backend.storage["bench"] = {"chroma_kb.namespace": namespace.encode()}
    daemon = PluginDaemon(ROOT, Path(sys.executable), backend, env={"CHROMA_KB_DATA_DIR": str(data_dir)})
    daemon.wait_ready()
    t0 = time.perf_counter()
    body = ask(daemon, kb, query)
    return time.perf_counter() - t0, body, daemon


def ask(daemon: PluginDaemon, kb: str, query: str) -> dict:
    payload = json.dumps(
        {"retrieval_setting": {"top_k": 4, "score_threshold": 0.0}, "query": query, "knowledge_id": kb}
    )
    status, _, body, _ = daemon.http(
        "bench",
        {"api_key": KEY},
        "/retrieval",
        payload.encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
    )
    assert status == 200, body[:300]
    return json.loads(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    args = parser.parse_args(argv)
    e5 = make_embedder("e5")
    data_dir = Path(tempfile.mkdtemp(prefix="kb-cold-"))
    namespace, kb = uuid.uuid4().hex, "bench"
    query = queries_from("scifact", 1)[0]
    try:
        lib = Library(data_dir / namespace)
        t0 = time.perf_counter()
        build(lib, kb, args.chunks, corpus_passages(), e5)
        print(f"built {args.chunks} chunks in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        keyword_dir = lib.get(kb).keyword.directory
        del lib

        intact, body, daemon = first_request(data_dir, namespace, kb, query)
        daemon.close()
        assert "warnings" not in body

        shutil.rmtree(keyword_dir)
        rebuilding, body, daemon = first_request(data_dir, namespace, kb, query)
        warned = body.get("warnings", [])
        t0 = time.perf_counter()
        while ask(daemon, kb, query).get("warnings"):
            time.sleep(0.5)
        hybrid_again = time.perf_counter() - t0 + rebuilding
        daemon.close()

        shutil.rmtree(keyword_dir)
        t0 = time.perf_counter()
        Library(data_dir / namespace).get(kb)  # the synchronous rebuild a first request used to wait for
        synchronous = time.perf_counter() - t0
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    rows = {
        "chunks": args.chunks,
        "first_request_index_intact_s": round(intact, 2),
        "first_request_index_to_rebuild_s": round(rebuilding, 2),
        "its_warning": warned,
        "hybrid_again_after_s": round(hybrid_again, 1),
        "synchronous_open_with_rebuild_s": round(synchronous, 1),
    }
    print(json.dumps(rows, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
