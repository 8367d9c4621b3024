"""POST /retrieval: Dify's External Knowledge API over the workspace's embedded store."""

from __future__ import annotations

import json
from collections.abc import Mapping

from dify_plugin import Endpoint
from werkzeug import Request, Response

from dify_adapter import external_api
from dify_adapter.http import dechunked
from dify_adapter.models import dify_reranker, embedder_for_name
from dify_adapter.workspace import workspace_library


class RetrievalEndpoint(Endpoint):
    def _invoke(self, r: Request, values: Mapping, settings: Mapping) -> Response:
        reply = external_api.retrieve(
            authorization=r.headers.get("Authorization"),
            raw_body=dechunked(r.get_data(cache=False)),
            content_type=r.headers.get("Content-Type", ""),
            settings=dict(settings),
            library_factory=lambda: workspace_library(self.session.storage),
            embedder_for=lambda name: embedder_for_name(self.session, name),
            reranker_for=lambda provider, model: dify_reranker(self.session, {"provider": provider, "model": model}),
        )
        return Response(
            json.dumps(reply.body, ensure_ascii=False), status=reply.status, content_type="application/json"
        )
