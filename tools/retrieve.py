"""Hybrid retrieval over one or more knowledge bases; ``result`` plugs into an LLM node as context."""

from __future__ import annotations

from collections.abc import Generator

from dify_adapter import params as p
from dify_adapter import tooling
from dify_adapter.models import dify_reranker, embedder_for_name
from dify_adapter.output import context_text, knowledge_items
from kb import DEFAULT_FUSION, DEFAULT_MODE, DEFAULT_TOP_K, FUSIONS, MAX_TOP_K, MODES, InvalidInput


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
        top_k = p.number(params, "top_k", DEFAULT_TOP_K, lo=1, hi=MAX_TOP_K, integer=True)
        threshold = p.number(params, "score_threshold", 0.0, lo=0.0, hi=1.0)
        mode = p.choice(params, "mode", MODES, DEFAULT_MODE)
        fusion = p.choice(params, "fusion", FUSIONS, DEFAULT_FUSION)
        vector_weight = p.number(params, "vector_weight", None, lo=0.0, hi=1.0)  # None: the fusion's own
        where = p.json_object(params, "metadata_filter")
        reranker = dify_reranker(self.session, params["rerank_model"]) if params.get("rerank_model") else None

        hits = self.library.search(
            names,
            query,
            top_k=top_k,
            mode=mode,
            fusion=fusion,
            vector_weight=vector_weight,
            where=where,
            score_threshold=threshold,
            reranker=reranker,
            embedder_for=lambda name: embedder_for_name(self.session, name),
        )
        items = knowledge_items([(hit.knowledge_base, hit) for hit in hits])
        yield self.create_variable_message("result", items)
        yield self.create_variable_message("error", "")
        yield self.create_text_message(context_text(items))
