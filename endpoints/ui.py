"""The knowledge page (``GET <endpoint>/ui``) and its data API (``/ui/api/...``) over the calling
workspace's store: werkzeug in, ``kb.WebApp`` in the middle, werkzeug out."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path

from dify_plugin import Endpoint
from werkzeug import Request, Response

from dify_adapter.http import dechunked
from dify_adapter.models import embedder_for_name
from dify_adapter.workspace import workspace_library
from kb import KBError, WebApp

_apps: dict[Path, WebApp] = {}
_lock = threading.Lock()


def page_for(library) -> WebApp:
    """One app per workspace store per process: its job runner resumes interrupted ingests when
    the workspace's page (or its data API) is first called after a restart."""
    with _lock:
        app = _apps.get(library.data_dir)
        if app is None or app.library is not library:
            app = _apps[library.data_dir] = WebApp(library)
        return app


def _json(status: int, message: str) -> Response:
    return Response(json.dumps({"error": message}), status=status, content_type="application/json")


class KnowledgePageEndpoint(Endpoint):
    def _invoke(self, r: Request, values: Mapping, settings: Mapping) -> Response:
        key = str(settings.get("api_key") or "")
        if r.path.startswith("/ui/api/") and not key:
            return _json(403, "Set an API key in this endpoint's settings first.")
        try:
            app = page_for(workspace_library(self.session.storage))
        except KBError as exc:
            return _json(503, str(exc))
        reply = app.handle(
            r.method,
            r.path,
            r.args.to_dict(),
            dict(r.headers),
            dechunked(r.get_data(cache=False)),
            api_key=key,
            embedder_for=lambda name: embedder_for_name(self.session, name),
        )
        return Response(reply.body, status=reply.status, headers=reply.headers)
