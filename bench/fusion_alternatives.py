"""Replay the fusion alternatives tried for issue 18 on ``bench.fusion_lab`` dumps: each one's
nDCG@10 minus the default's, per split, with the standard error of that paired difference.

    .venv/bin/python -m bench.fusion_alternatives DUMP.pkl [DUMP.pkl ...] [--report-splits]
    .venv/bin/python -m bench.fusion_alternatives --bm25 DATASET_DIR

Only tuning splits are scored by default (scifact train, the tuning fifths of medqa-zh and the
Python FAQ): alternatives are judged there. ``--report-splits`` scores the report splits instead
(the feasibility scan in ``bench/RESULTS.md``: could any member of a family reach a target at
all; nothing is chosen there). ``--bm25`` scores the keyword channel alone with bm25s over our
tokens for a grid of k1 and b (and, on Chinese, character unigrams added to the bigrams), on the
folder's tuning queries.

Every alternative keeps the default's per-query vector weight and coverage term and changes one
thing; its score array covers the row's candidates, ranked as ``bench.fusion_replay`` ranks them.
"""

from __future__ import annotations

import argparse
import itertools
import unicodedata
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.fusion_replay import PEERS, docs_of, evidence, keyword_side, load, z, zscore_scores
from kb.fusion import ADAPTIVE_MAX, COVERAGE_WEIGHT, default_weight_for
from kb.metrics import ndcg_at
from kb.tokenize import _CJK_TERM, _TOKEN_RUNS, KeywordTokenizer

TUNING = ("train", "test/tuning-fifth")
Scores = Callable[[dict], np.ndarray]  # a row -> one fused score per candidate
Ranker = Callable[[dict], list[str]]
_tokenizer = KeywordTokenizer()


def weight(row: dict) -> float:
    """The default's vector weight for this query, as ``kb.fusion.fuse`` computes it."""
    if "weight" not in row:
        row["weight"] = default_weight_for(evidence(row))
    return row["weight"]


def default(row: dict) -> np.ndarray:
    return zscore_scores(row, weight(row))


def _mix(row: dict, semantic: np.ndarray, keyword: np.ndarray, shift: float = 0.0) -> np.ndarray:
    w = min(1.0, max(0.0, weight(row) + shift))
    return w * semantic + (1 - w) * keyword


def weight_shift(delta: float) -> Scores:
    return lambda r: _mix(r, z(r["cos"]), keyword_side(r), delta)


def feedback(m: int, beta: float) -> Scores:
    """Rocchio on the vectors: the query moved toward the centroid of the default's m best."""
    return lambda r: _mix(r, z(r["cos"] + beta * r["gram"][:, :m].astype(np.float64).mean(axis=1)), keyword_side(r))


def feedback_evidence(m: int, gamma: float) -> Scores:
    """Closeness to the default's m best as a third z-scored evidence."""
    return lambda r: default(r) + gamma * z(r["gram"][:, :m].astype(np.float64).mean(axis=1))


def keyword_clipped(c: float) -> Scores:
    """The keyword side's z-scores capped at c (an outlier BM25 hit cannot outvote the vectors)."""
    return lambda r: _mix(r, z(r["cos"]), np.minimum(keyword_side(r), c))


def _own(x: np.ndarray, order: np.ndarray, depth: int) -> np.ndarray:
    ref = x[order[:depth]]
    sd = ref.std()
    return (x - ref.mean()) / sd if sd > 0 else np.zeros_like(x)


def own_list(depth: int, both: bool) -> Scores:
    """Standardized over each channel's own first ``depth`` hits instead of the pooled candidates."""

    def scores(r: dict) -> np.ndarray:
        semantic = _own(r["cos"], r["sem"], depth)
        keyword = _own(r["share"], r["kw"], depth) + COVERAGE_WEIGHT * z(r["cov"]) if both else keyword_side(r)
        return _mix(r, semantic, keyword)

    return scores


def minmax_blend(share: float) -> Scores:
    """The default's z-space score blended with the same weights over min-max scaled channels."""

    def mm(x: np.ndarray) -> np.ndarray:
        lo, hi = x.min(), x.max()
        return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)

    return lambda r: (1 - share) * z(default(r)) + share * z(_mix(r, mm(r["cos"]), mm(r["share"])))


def length_shift(below: int, per_term: float) -> Scores:
    """More vector weight for short queries: + per_term for each term under ``below``."""
    return lambda r: _mix(r, z(r["cos"]), keyword_side(r), min(ADAPTIVE_MAX, per_term * max(0, below - r["n_terms"])))


def _proximity(row: dict, window: int = 8) -> np.ndarray:
    """Per candidate: Σ over adjacent query-term pairs of c / (c + 1), c = how often the two occur
    within ``window`` terms of each other (sequential-dependence style; CJK bigram pairs are trigrams)."""
    if "proximity" in row:
        return row["proximity"]
    q = _tokenizer(row["text"])
    pairs = list(dict.fromkeys((a, b) for a, b in itertools.pairwise(q) if a != b))
    out = np.zeros(len(row["texts"]))
    for i, text in enumerate(row["texts"] if pairs else []):
        positions: dict[str, list[int]] = {}
        for j, term in enumerate(_tokenizer(text)):
            positions.setdefault(term, []).append(j)
        for a, b in pairs:
            if a in positions and b in positions:
                pb = np.array(positions[b])
                c = sum(int(np.any(np.abs(pb - p) <= window)) for p in positions[a])
                out[i] += c / (c + 1.0)
    row["proximity"] = out
    return out


def proximity(weight_: float) -> Scores:
    return lambda r: _mix(r, z(r["cos"]), keyword_side(r) + weight_ * z(_proximity(r)))


def ensemble(peer: str, share: float, k: int = 60) -> Ranker:
    """Reciprocal-rank mix of the default's ranking and a peer's (weights 1 − share, share)."""

    def rank(r: dict) -> list[str]:
        fused: dict[str, float] = {}
        for ranking, w in ((docs_of(r, default(r)), 1 - share), (PEERS[peer](r), share)):
            for i, d in enumerate(ranking, 1):
                fused[d] = fused.get(d, 0.0) + w / (k + i)
        return sorted(fused, key=lambda d: -fused[d])

    return rank


def _ranker(scores: Scores) -> Ranker:
    return lambda r: docs_of(r, scores(r))


ALTERNATIVES: list[tuple[str, Ranker]] = [
    *[(f"vector weight {d:+.2f}", _ranker(weight_shift(d))) for d in (-0.1, -0.05, 0.05, 0.1, 0.15)],
    *[(f"vector feedback m={m} β={b}", _ranker(feedback(m, b))) for m in (3, 10) for b in (0.25, 0.5, 1.0)],
    *[(f"feedback evidence m={m} γ={g}", _ranker(feedback_evidence(m, g))) for m in (3, 10) for g in (0.1, 0.2)],
    *[(f"keyword z capped at {c}", _ranker(keyword_clipped(c))) for c in (2.0, 3.0, 4.0)],
    *[(f"own-list z, semantic, depth {d}", _ranker(own_list(d, False))) for d in (30, 100)],
    *[(f"own-list z, both, depth {d}", _ranker(own_list(d, True))) for d in (30, 100)],
    *[(f"min-max blend {s}", _ranker(minmax_blend(s))) for s in (0.3, 1.0)],
    *[(f"short query +{p}/term under {b}", _ranker(length_shift(b, p))) for b, p in ((6, 0.06), (8, 0.03))],
    *[(f"proximity evidence {w}", _ranker(proximity(w))) for w in (0.1, 0.2, 0.4)],
    *[(f"rank mix with {p} {s}", ensemble(p, s)) for p in ("convex", "dist", "relative") for s in (0.3, 0.5)],
]


def ndcgs(rows: list[dict], rank: Ranker) -> np.ndarray:
    return np.array([ndcg_at(rank(r), r["qrels"], 10) for r in rows])


def report(path: str, tuning: bool = True) -> str:
    dump = load(path)
    out = []
    for split in sorted({r["split"] for r in dump["rows"]}):
        if (split in TUNING) != tuning:
            continue
        rows = [r for r in dump["rows"] if r["split"] == split]
        base = ndcgs(rows, _ranker(default))
        best_peer = max((ndcgs(rows, f).mean(), name) for name, f in PEERS.items())
        out.append(
            f"\n**{dump['dataset']} ({dump['embedder']}), {split}, {len(rows)} queries**: default "
            f"{base.mean():.4f}; best peer {best_peer[1]} {best_peer[0]:.4f}\n"
        )
        out.append("| alternative | nDCG@10 | − default | s.e. |\n|---|---|---|---|")
        for name, rank in ALTERNATIVES:
            diff = ndcgs(rows, rank) - base
            se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
            out.append(f"| {name} | {base.mean() + diff.mean():.4f} | {diff.mean():+.4f} | {se:.4f} |")
    return "\n".join(out)


def _with_unigrams(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _tokenizer(text) + [c for cjk, _ in _TOKEN_RUNS.findall(folded) if cjk for c in cjk]


def bm25_grid(folder: Path) -> str:
    """The keyword channel alone (bm25s, Lucene IDF, our tokens) on the folder's tuning queries."""
    import bm25s

    from bench.quality import tuning_split
    from kb.eval import load_beir
    from kb.tokenize import index_text

    split = "train" if (folder / "qrels" / "train.tsv").is_file() else "test"
    corpus, queries, qrels = load_beir(folder, split)
    if split == "test":
        qrels = {q: rel for q, rel in qrels.items() if tuning_split(q)}
    ids = [str(c["_id"]) for c in corpus]
    texts = [index_text(str(c.get("title") or ""), c["text"]) for c in corpus]
    qids = [q for q in qrels if q in queries]
    cjk = any(_CJK_TERM.search(t) for t in texts[:50])
    lines = [f"**{folder.name}**, {split if split == 'train' else 'tuning fifth'}, {len(qids)} queries\n"]
    lines.append("| tokens | k1 | b | nDCG@10 |\n|---|---|---|---|")
    for name, tokenize in (("ours", _tokenizer), ("ours + CJK unigrams", _with_unigrams))[: 2 if cjk else 1]:
        docs, query_terms = [tokenize(t) for t in texts], [tokenize(queries[q]) for q in qids]
        for k1 in (0.9, 1.2, 1.5, 2.0):
            for b in (0.4, 0.75, 0.9):
                model = bm25s.BM25(k1=k1, b=b, method="lucene")
                model.index(docs, show_progress=False)
                total = 0.0
                for q, terms in zip(qids, query_terms, strict=True):
                    s = model.get_scores(terms) if terms else np.zeros(len(ids))
                    top = [ids[i] for i in np.argsort(-s)[:10] if s[i] > 0]
                    total += ndcg_at(top, qrels[q], 10)
                lines.append(f"| {name} | {k1} | {b} | {total / len(qids):.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fusion_alternatives", description=__doc__.splitlines()[0])
    parser.add_argument("dumps", nargs="*", help="pickles written by bench.fusion_lab")
    parser.add_argument("--report-splits", action="store_true", help="score the report splits (feasibility only)")
    parser.add_argument("--bm25", type=Path, help="a BEIR folder: the keyword channel's k1/b grid instead")
    args = parser.parse_args(argv)
    if args.bm25:
        print(bm25_grid(args.bm25))
        return 0
    if not args.dumps:
        parser.error("name at least one dump (or --bm25 DATASET_DIR)")
    for path in args.dumps:
        print(report(path, tuning=not args.report_splits))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
