"""The knowledge page: a single-page web UI (plain HTML/CSS/JS shipped in ``static/``) and its JSON
data API, to manage knowledge bases, upload files and test retrieval in a browser.

``WebApp`` is framework-free (``handle(method, path, query, headers, body) -> Response``) so that
any server can carry it: ``kb.web.server`` (the standard library's ``ThreadingHTTPServer``,
``python -m kb serve``) and the Dify plugin's endpoint, which converts werkzeug requests.
"""

from kb.web.app import Response, WebApp

__all__ = ["Response", "WebApp"]
