import json

import pytest

from kb.cli import main
from kb.errors import InvalidInput
from kb.eval import evaluate, load_beir
from kb.metrics import mrr_at, ndcg_at, recall_at


def test_metrics_match_trec_eval_definitions():
    rel = {"a": 1, "b": 2}
    assert ndcg_at(["b", "a"], rel) == pytest.approx(1.0)
    assert ndcg_at(["a", "x", "b"], rel) == pytest.approx((1 + 2 / 2) / (2 + 1 / 1.5849625))
    assert recall_at(["a", "x"], rel) == 0.5
    assert mrr_at(["x", "b"], rel) == 0.5 and mrr_at(["x"], rel) == 0.0


@pytest.fixture
def beir(tmp_path):
    folder = tmp_path / "tiny"
    (folder / "qrels").mkdir(parents=True)
    corpus = [
        {"_id": "d1", "title": "年假", "text": "员工每年享有带薪年假十天，可顺延到次年三月。"},
        {"_id": "d2", "title": "报销", "text": "差旅费用须在三十天内提交报销申请。"},
        {"_id": "d3", "title": "Fusion", "text": "Reciprocal rank fusion merges ranked lists."},
        {"_id": "d4", "title": "Chroma", "text": "Chroma stores embeddings on disk."},
    ]
    queries = [
        {"_id": "q1", "text": "年假能顺延吗"},
        {"_id": "q2", "text": "how to merge rankings"},
        {"_id": "q3", "text": "where are embeddings stored"},
    ]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(c, ensure_ascii=False) for c in corpus), encoding="utf-8")
    (folder / "queries.jsonl").write_text(
        "\n".join(json.dumps(q, ensure_ascii=False) for q in queries), encoding="utf-8"
    )
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\nq3\td4\t1\n")
    return folder


def test_eval_on_any_beir_folder_and_cache_reuse(beir, tmp_path):
    first = evaluate(beir, data_dir=tmp_path / "data", embedder="e5")
    assert first["queries"] == 3 and first["ndcg@10"] == 1.0 and first["embedded_now"] == 4
    for key in ("recall@100", "mrr@10", "latency_ms_p50", "latency_ms_p95"):
        assert key in first
    second = evaluate(beir, data_dir=tmp_path / "data", embedder="e5", mode="keyword")
    assert second["embedded_now"] == 0 and second["mode"] == "keyword"


def test_eval_cli_prints_one_json_object(beir, tmp_path, capsys):
    assert (
        main(
            [
                "eval",
                "--dataset",
                str(beir),
                "--embedder",
                "none",
                "--mode",
                "keyword",
                "--queries",
                "2",
                "--json",
                "--data-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["queries"] == 2 and 0 <= result["ndcg@10"] <= 1


def test_broken_beir_folders_are_explained(beir):
    (beir / "qrels" / "test.tsv").unlink()
    with pytest.raises(InvalidInput, match=r"test\.tsv is missing"):
        load_beir(beir)
    (beir / "corpus.jsonl").write_text("{bad")
    with pytest.raises(InvalidInput, match="line 1"):
        load_beir(beir)
