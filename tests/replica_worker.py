"""One replica of the plugin in server mode, driven over stdin/stdout by test_server_replicas.py.

Each line in is a JSON command; each line out is a JSON answer. The replica has its own data
directory (its keyword indexes) and shares the Chroma server of ``$CHROMA_KB_SERVER``.

``ingest`` with ``stall_after``: after that many Chroma ``add`` calls have reached the server, the
next one also reaches it, then the worker says ``{"stalled": true}`` and waits to be killed:
the worst moment for a writer to die (Chroma changed, its keyword index and the change log's
*done* record not).
"""

from __future__ import annotations

import json
import sys
import time

from kb import Library, make_embedder, text_document
from kb.chunks import ChunkStore


def main(data_dir: str, embedder_name: str) -> None:
    embedder = make_embedder(embedder_name) if embedder_name != "none" else None
    library = Library(data_dir)
    out = sys.stdout
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        answer: dict = {"op": op}
        if op == "create":
            library.get_or_create(cmd["kb"], embedder)
        elif op == "ingest":
            kb = library.get(cmd["kb"])
            if "stall_after" in cmd:
                _stall_after(cmd["stall_after"], out)
            docs = [text_document(d["text"], doc_id=d["id"], title=d.get("title", "")) for d in cmd["docs"]]
            report = kb.ingest(docs, batch_size=cmd.get("batch_size"))
            answer.update(complete=report.complete, added=report.added, unchanged=report.unchanged)
        elif op == "search":
            kb = library.get(cmd["kb"])
            hits = kb.search(cmd["query"], mode=cmd.get("mode", "hybrid"), top_k=cmd.get("top_k", 10))
            answer["hits"] = [[h.doc_id, h.id, h.keyword_rank, h.semantic_rank] for h in hits]
        elif op == "delete":
            answer["removed"] = library.get(cmd["kb"]).delete_document(cmd["doc"])
        elif op == "state":
            kb = library.get(cmd["kb"])
            kb.refresh()
            stored = {cid for ids, _, _ in kb.iter_chunks(include=[]) for cid in ids}
            answer.update(stored=sorted(stored), indexed=sorted(kb.keyword.ids()), repairs=kb.repairs)
        answer["at"] = time.time()
        out.write(json.dumps(answer) + "\n")
        out.flush()


def _stall_after(adds: int, out) -> None:
    real = ChunkStore.write_chunks
    done = 0

    def write_chunks(self, ids, vectors, documents, metadatas):
        nonlocal done
        if done < adds:
            done += 1
            return real(self, ids, vectors, documents, metadatas)
        collection = self.collection

        class Stalling:  # the add reaches Chroma, then this writer hangs until it is killed
            def __getattr__(self, name):
                return getattr(collection, name)

            def add(self, **kwargs):
                collection.add(**kwargs)
                out.write(json.dumps({"stalled": True}) + "\n")
                out.flush()
                time.sleep(3600)

        self.collection = Stalling()
        return real(self, ids, vectors, documents, metadatas)

    ChunkStore.write_chunks = write_chunks  # type: ignore[method-assign]


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
