"""Hybrid retrieval over one or more knowledge bases; ``result`` plugs into an LLM node as context."""

from __future__ import annotations

from collections.abc import Generator

from dify_adapter import params as p
from dify_adapter import tooling
from dify_adapter.models import dify_reranker, embedder_for_name
from dify_adapter.output import context_text, knowledge_items
from kb.errors import InvalidInput
from kb.fusion import DEFAULT_FUSION, FUSIONS
from kb.retrieval import MAX_TOP_K, MODES, rerank


class RetrieveTool(tooling.KBTool):  # via the module: the SDK loads the one Tool subclass it finds here
    def empty_outputs(self) -> dict:
        return {"result": []}

    def run(self, params: dict) -> Generator:
        query = p.text(params, "query")
        if not query:
            raise InvalidInput("The query is empty; bind it to the user's question.")
        names = p.names(params, "knowledge_bases", "knowledge_base_names")
        if not names:
            raise InvalidInput("Pick at least one knowledge base (or list names in 'Knowledge base names').")
        top_k = p.number(params, "top_k", 5, lo=1, hi=MAX_TOP_K, integer=True)
        threshold = p.number(params, "score_threshold", 0.0, lo=0.0, hi=1.0)
        mode = p.choice(params, "mode", MODES, "hybrid")
        fusion = p.choice(params, "fusion", FUSIONS, DEFAULT_FUSION)
        vector_weight = p.number(params, "vector_weight", None, lo=0.0, hi=1.0)  # None: the fusion's own
        where = p.json_object(params, "metadata_filter")
        reranker = dify_reranker(self.session, params["rerank_model"]) if params.get("rerank_model") else None

        library = self.library
        pool = top_k * 4 if reranker else top_k
        merged = []
        for name in names:
            kb = library.get(name)
            embedder = (
                None if kb.keyword_only or mode == "keyword" else embedder_for_name(self.session, kb.embedder_name)
            )
            hits = kb.search(
                query,
                top_k=min(MAX_TOP_K, pool),
                mode=mode,
                fusion=fusion,
                vector_weight=vector_weight,
                where=where,
                embedder=embedder,
            )
            merged.extend((kb.name, h) for h in hits)
        merged.sort(key=lambda pair: -pair[1].score)
        if reranker and merged:
            merged = merged[: max(pool, 20)]
            rerank(query, [hit for _, hit in merged], reranker)  # across all KBs at once
            merged.sort(key=lambda pair: -pair[1].score)
        merged = [pair for pair in merged if pair[1].score >= threshold][:top_k]

        items = knowledge_items(merged)
        yield self.create_variable_message("result", items)
        yield self.create_variable_message("error", "")
        yield self.create_text_message(context_text(items))
