"""Fusion lab: dump each query's channel evidence once, so fusion rules can be replayed offline.

For every query of a BEIR folder that has judgements (test and, where present, train), runs the
default hybrid search through ``kb.search`` and records the ``Evidence`` it fused (every
candidate's cosine, keyword share and coverage, both channels' lists), the documents it returned,
and the two document-level channel lists the peers fuse (``bench.quality.Dataset.channels``).
Query vectors go to the same cache as ``bench quality``. For the alternatives
``bench/fusion_alternatives.py`` replays, it also keeps each candidate's indexed text and its
cosine with the default's ``FEEDBACK`` best candidates.

    .venv/bin/python -m bench.fusion_lab DATASET_DIR EMBEDDER OUT.pkl [--data-dir D] [--test-queries N]

The pickle holds plain numpy arrays and lists; ``bench/fusion_replay.py`` reads it.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

import numpy as np

import kb.retrieval
from bench.common import ROOT
from bench.quality import DEPTH, TUNED_ON_A_FIFTH, CachedQueries, _by_doc, read_chunks, tuning_split
from kb.eval import load_beir, prepare
from kb.tokenize import word_terms

FEEDBACK = 20  # the gram's columns: the default fusion's best candidates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fusion_lab")
    parser.add_argument("folder")
    parser.add_argument("embedder")
    parser.add_argument("out")
    parser.add_argument("--data-dir")
    parser.add_argument("--test-queries", type=int, help="only the first N test queries by id (all train/tuning ones)")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    kbase, queries, qrels, _, _ = prepare(folder, data_dir=args.data_dir, embedder=args.embedder)
    split_of = {q: "test" for q in qrels}
    if (folder / "qrels" / "train.tsv").is_file():
        _, _, train = load_beir(folder, "train")
        for q, rel in train.items():
            qrels.setdefault(q, rel)
            split_of.setdefault(q, "train")
    for q in split_of:
        if split_of[q] == "test" and folder.name in TUNED_ON_A_FIFTH and tuning_split(q):
            split_of[q] = "test/tuning-fifth"
    cache = ROOT / "bench" / "results" / "cache" / f"{kbase.collection.name}-queries.npz"
    embedder = CachedQueries(kbase.embedder, cache)
    doc_of, text_of, _ = read_chunks(kbase)  # text: what the keyword channel indexed (proximity)

    captured: list = []
    real_fuse = kb.retrieval.fuse

    def spy(fusion, evidence, vector_weight=None):
        fused = real_fuse(fusion, evidence, vector_weight)
        captured.append((evidence, fused))
        return fused

    kb.retrieval.fuse = spy
    rows = []
    # A blank query (cmrc2018 has two) is refused by the search; bench quality counts it as 0 for
    # every method, so leaving it out here shifts every rule's mean alike.
    qids = sorted(q for q in qrels if q in queries and queries[q].strip())
    if args.test_queries is not None:
        test = [q for q in qids if split_of[q] == "test"][: args.test_queries]
        qids = sorted(set(test) | {q for q in qids if split_of[q] != "test"})
    started = time.perf_counter()
    for n, qid in enumerate(qids, 1):
        text = queries[qid]
        captured.clear()
        hits = kbase.search(text, top_k=DEPTH, candidates=DEPTH, embedder=embedder, mode="hybrid")
        ev, fused = captured[0]
        keys = list(ev.cosine)
        # Every candidate's cosine with the FEEDBACK best fused candidates (feedback experiments).
        top = sorted(range(len(keys)), key=lambda i: -fused[keys[i]])[:FEEDBACK]
        found, units = kbase.keyword.vectors_of([k[1] for k in keys])
        assert found == [k[1] for k in keys], "every candidate has a vector copy"
        units = np.asarray(units, np.float32)
        index = {k: i for i, k in enumerate(keys)}
        vector = embedder.embed_query(text)
        got = kbase.collection.query(query_embeddings=[vector], n_results=DEPTH * 2, include=["distances"])
        semantic = [(cid, 1 - d) for cid, d in zip(got["ids"][0], got["distances"][0], strict=True)]
        khits = kbase.keyword.search(kbase.tokenizer(text), DEPTH * 2)
        terms = kbase.tokenizer(text)
        rows.append(
            {
                "qid": qid,
                "split": split_of[qid],
                "text": text,
                "n_terms": len(set(terms)),
                "n_words": len(set(word_terms(terms))),
                "qrels": qrels[qid],
                "cids": [k[1] for k in keys],
                "docs": [doc_of[k[1]] for k in keys],
                "texts": [text_of[k[1]] for k in keys],
                "cos": np.array([ev.cosine[k] for k in keys], np.float64),
                "share": np.array([ev.keyword_share[k] for k in keys], np.float64),
                "cov": np.array([(ev.coverage or {})[k] for k in keys], np.float64),
                "sem": np.array([index[k] for k, _ in ev.semantic], np.int32),
                "kw": np.array([index[k] for k, _ in ev.keyword], np.int32),
                "best_share": ev.best_keyword_share,
                "top": np.array(top, np.int32),
                "gram": (units @ units[top].T).astype(np.float16),
                "default_docs": list(dict.fromkeys(h.doc_id for h in hits))[:DEPTH],
                "peer_semantic": _by_doc(semantic, doc_of),
                "peer_keyword": _by_doc(list(zip(khits.ids, khits.scores, strict=True)), doc_of),
            }
        )
        if n % 200 == 0:
            print(f"[lab] {folder.name}: {n}/{len(qids)} {time.perf_counter() - started:.0f}s", file=sys.stderr)
            embedder.save()
    embedder.save()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "wb") as f:
        pickle.dump({"dataset": folder.name, "embedder": args.embedder, "rows": rows}, f)
    print(f"[lab] {folder.name}: {len(rows)} queries -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
