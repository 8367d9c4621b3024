"""Smoke runs of the benchmarks on tiny inputs: they run end to end and report every row.
Nothing here asserts a timing; the real numbers are in bench/RESULTS.md."""

import json

import pytest

from bench import peers
from bench import quality as quality_bench
from bench import speed as speed_bench

DOCS = {
    "d1": ("Annual leave", "Employees receive ten days of paid annual leave after one year of service."),
    "d2": ("Travel", "Travel expenses must be claimed within thirty days with the original invoices."),
    "d3": ("年假制度", "员工入职满一年后，每年享有带薪年假十天，未休完的年假可以顺延到次年三月底。"),
    "d4": ("报销", "差旅费用须在出差结束后三十天内提交报销申请，并附上发票原件。"),
    "d5": ("Fusion", "Reciprocal rank fusion adds one over sixty plus the rank from each ranked list."),
    "d6": ("Chroma", "Chroma persists collections of embeddings to a local directory in embedded mode."),
}
QUERIES = {
    "q1": ("how many days of paid leave do employees get", "d1"),
    "q2": ("年假可以顺延吗", "d3"),
    "q3": ("deadline for travel expense claims", "d2"),
    "q4": ("出差报销需要发票吗", "d4"),
    "q5": ("how does rank fusion combine lists", "d5"),
    "q6": (" ", "d6"),  # blank (cmrc2018 has two): no method answers it, and it counts
}


@pytest.fixture
def beir(tmp_path):
    folder = tmp_path / "tiny"
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for doc_id, (title, text) in DOCS.items():
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text}, ensure_ascii=False) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as f:
        for qid, (text, _) in QUERIES.items():
            f.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{qid}\t{doc}\t1" for qid, (_, doc) in QUERIES.items()]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.slow
def test_quality_benchmark_reports_ours_peers_and_reference(beir, tmp_path, capsys):
    out = tmp_path / "quality.json"
    args = ["--dataset", str(beir), "--embedder", "e5", "--data-dir", str(tmp_path / "data"), "--json", str(out)]
    assert quality_bench.main(args) == 0
    table = capsys.readouterr().out
    result = json.loads(out.read_text())["results"][0]
    methods = {r["method"]: r for r in result["rows"]}
    assert result["queries"] == len(QUERIES) and len(methods) == 11
    for name in ("ours: semantic only", "peer: LlamaIndex dist_based_score", "reference: bm25s over our tokens"):
        assert name in methods and name in table
    assert all(0.0 <= r[m] <= 1.0 for r in methods.values() for m in ("ndcg@10", "recall@100", "mrr@10"))
    # Our keyword channel ranks like bm25s on the same tokens (the parity the issue asks for).
    assert methods["ours: keyword only (BM25)"]["ndcg@10"] == pytest.approx(
        methods["reference: bm25s over our tokens"]["ndcg@10"], abs=0.01
    )
    # The tiny set is easy: the default hybrid finds every answer in the top 10; the blank query
    # counts, with nothing found by any method.
    answerable = (len(QUERIES) - 1) / len(QUERIES)
    assert next(r for name, r in methods.items() if "default" in name)["recall@100"] == pytest.approx(
        answerable, abs=1e-4
    )
    assert all(r["recall@100"] <= answerable + 1e-4 for r in methods.values())
    # The summary gives each margin with its paired-bootstrap interval over the set's queries.
    assert all(len(r["ndcg@10 per query"]) == len(QUERIES) for r in methods.values())
    summary_row = next(line for line in table.splitlines() if line.startswith("| tiny (e5)"))
    assert summary_row.count("[") == 2 and "[95 %]" in table
    # Runs made side by side are summarized as one from their JSON files.
    assert quality_bench.main(["--summarize", str(out), str(out)]) == 0
    again = capsys.readouterr().out
    assert again.count("| tiny (e5)") == 2 and "Mean over the 2 target sets" in again


def test_margin_interval_is_a_paired_bootstrap():
    assert quality_bench.margin_interval([0.5, 0.7, 0.9], [0.4, 0.6, 0.8]) == pytest.approx((0.1, 0.1))
    lo, hi = quality_bench.margin_interval([1.0, 0.0] * 50, [0.0, 1.0] * 50)  # as often better as worse
    assert lo < 0 < hi and hi - lo < 0.5


@pytest.mark.slow
def test_speed_benchmark_runs_every_measure(tmp_path, capsys):
    out = tmp_path / "speed.json"
    assert speed_bench.main(["--sizes", "400", "--queries", "10", "--json", str(out)]) == 0
    row = json.loads(out.read_text())["results"][0]
    assert row["chunks"] == 400 and row["queries"] == 10
    for _, ours, ref, ratio in speed_bench.ROWS:
        assert row[ours] > 0 and row[ref] > 0 and (ratio is None or row[ratio] > 0)
    assert "keyword query p50" in capsys.readouterr().out


@pytest.mark.slow
def test_speed_benchmark_measures_again_on_the_stores_it_built(tmp_path):
    first, second, work = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "w"
    args = ["--sizes", "300", "--queries", "10", "--workdir", str(work)]
    assert speed_bench.main([*args, "--json", str(first)]) == 0
    assert (work / "build-300.json").exists() and (work / "kb-300").is_dir()
    assert speed_bench.main([*args, "--reuse", "--json", str(second)]) == 0
    a, b = (json.loads(p.read_text())["results"][0] for p in (first, second))
    # the build is not repeated: its figures are the first run's; the queries are measured again
    for key in ("ingest_s", "ref_chroma_add_s", "built_by"):
        assert a[key] == b[key], key
    assert b["hybrid_p50_ms"] > 0 and b["measured_by"] and b["disk_mb"] > 0


@pytest.mark.slow
def test_speed_benchmark_without_reference_measures_ours_alone(tmp_path, capsys):
    out, work = tmp_path / "speed.json", tmp_path / "w"
    args = ["--sizes", "300", "--queries", "10", "--workdir", str(work), "--no-reference"]
    assert speed_bench.main([*args, "--json", str(out)]) == 0
    row = json.loads(out.read_text())["results"][0]
    assert not (work / "chroma-300").exists()  # no reference store was built
    assert all(row[key] is None for key in (*speed_bench.REFERENCE_KEYS, "ref_chroma_add_s", "ingest_ratio"))
    assert row["hybrid_p95_ms"] > 0 and row["hybrid_5%_p50_ratio"] > 0 and row["peak_rss_mb"] > 0
    assert "| ingest, s (ratio to raw Chroma add; target ≤ 1.2) | " in capsys.readouterr().out
    # its stores cannot stand in for a run with references
    with pytest.raises(SystemExit, match="built with --no-reference"):
        speed_bench.main([*args[:-1], "--reuse", "--json", str(out)])


def test_speed_benchmark_reuse_needs_a_workdir(capsys):
    with pytest.raises(SystemExit):
        speed_bench.main(["--reuse"])
    assert "--reuse needs --workdir" in capsys.readouterr().err


def test_peer_fusions_follow_their_formulas():
    semantic = [("a", 0.9), ("b", 0.5), ("c", 0.1)]
    keyword = [("c", 12.0), ("a", 3.0)]
    assert peers.rrf(keyword, semantic)[0] == "a"  # ranked by both lists
    assert peers.minmax(semantic) == {"a": 1.0, "b": 0.5, "c": 0.0}
    assert peers.minmax([("x", 2.0)]) == {"x": 1.0}
    assert peers.convex(semantic, keyword, alpha=1.0)[0] == "a"
    assert peers.convex(semantic, keyword, alpha=0.0)[0] == "c"
    assert set(peers.dist_based_score(semantic, keyword)) == {"a", "b", "c"}


def test_dify_keyword_score_is_idf_weighted_keyword_overlap():
    scorer = peers.DifyKeywordScorer()
    scores = scorer.scores("报销需要发票吗", ["差旅费用报销需要发票原件", "报销流程说明", "年假十天"])
    assert scores[0] > scores[1] > scores[2] == 0.0
    assert scorer.scores("annual leave policy", ["The annual leave policy", "travel"]) == [1.0, 0.0]


def test_fusion_lab_dump_replays_the_default_and_every_alternative(beir, tmp_path, capsys):
    from bench import fusion_alternatives, fusion_lab
    from bench.fusion_replay import docs_of, load

    dump = tmp_path / "lab.pkl"
    args = [str(beir), "e5", str(dump), "--data-dir", str(tmp_path / "data")]
    assert fusion_lab.main(args) == 0
    rows = load(str(dump))["rows"]
    assert len(rows) == len(QUERIES) - 1  # the blank query is left out
    for row in rows:
        # The replayed default ranks the candidates exactly as kb.search did.
        replayed = docs_of(row, fusion_alternatives.default(row))
        assert replayed[: len(row["default_docs"])] == row["default_docs"]
        # The feedback columns are the default's best candidates, each at cosine 1 with itself.
        assert [row["docs"][i] for i in row["top"][:3]] == replayed[:3]
        assert all(abs(float(row["gram"][i, j]) - 1.0) < 2e-3 for j, i in enumerate(row["top"]))
    # Two query words next to each other (in either order) count; three terms apart they do not.
    texts = ["paid annual leave", "annual holiday schedule paid", "nothing here"]
    row = rows[0] | {"text": "paid annual", "texts": texts}
    assert fusion_alternatives._proximity(row, window=1).tolist() == [0.5, 0.0, 0.0]
    out = fusion_alternatives.report(str(dump), tuning=False)
    assert all(f"| {name} |" in out for name, _ in fusion_alternatives.ALTERNATIVES)
