"""``python -m kb``: a thin command line over the engine.

Tables for people, ``--json`` for scripts, progress bars on stderr, and exit code 1 with a
one-line ``error: ...`` for every mistake a user can make (2 for bad command-line syntax).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from kb.chunking import DEFAULT_CHUNKING, ChunkingOptions
from kb.embedders import DEFAULT_EMBEDDER, LOCAL_EMBEDDERS, make_embedder
from kb.errors import InvalidInput, KBError
from kb.fusion import DEFAULT_FUSION, DEFAULT_VECTOR_WEIGHT, FUSIONS
from kb.jsontext import json_object
from kb.retrieval import DEFAULT_MODE, DEFAULT_TOP_K, MODES

SAMPLE_QUERIES = [
    "年假可以顺延吗？",
    "how does reciprocal rank fusion combine the two channels",
    "高血压 党参",
    "reset password",
]


def _progress(label: str, quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=0, desc=label, unit="chunk", file=sys.stderr, leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def _library(args):
    from kb.library import Library

    return Library(args.data_dir)


def _emit(args, data, table: str) -> None:
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        print(table)


def _table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    from unicodedata import east_asian_width

    def width(s: str) -> int:
        return sum(2 if east_asian_width(c) in "WF" else 1 for c in s)

    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(width(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c + " " * (w - width(c)) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _chunking(args) -> ChunkingOptions:
    return ChunkingOptions(
        mode=args.chunk_mode,
        separator=args.separator,
        max_tokens=args.chunk_size,
        overlap=args.overlap,
        child_max_tokens=args.child_chunk_size,
        child_overlap=args.child_overlap,
    )


def collect_documents(paths: list[str], args) -> list:
    """Read files (directories recursively) into documents, in order; an input that cannot be read
    becomes a failed ``IngestOutcome`` in its place (one bad file never stops the others). Document ids
    follow ``kb.documents``: a file in a directory is named by its path relative to it."""
    from kb.documents import file_name
    from kb.ingest import IngestOutcome
    from kb.parsing import parse_file

    metadata = json_object(args.metadata, "--metadata") or {}
    inputs: list = []
    for raw in paths:
        path = Path(raw)
        shown = file_name(raw)
        if path.is_dir():
            found = _directory_inputs(path, shown)
            if not found:
                inputs.append(IngestOutcome.failure(shown, "no files in this folder."))
            for item in found:
                if isinstance(item, IngestOutcome):
                    inputs.append(item)
                    continue
                file, relative = item
                inputs.append(_read(parse_file, file, relative, f"{shown.rstrip('/')}/{relative}", metadata))
            continue
        if not os.path.lexists(path):
            inputs.append(IngestOutcome.failure(shown, "no such file or directory."))
            continue
        doc = _read(parse_file, path, args.doc_id or file_name(path.name), shown, metadata)
        if args.title and not isinstance(doc, IngestOutcome):
            doc.title = args.title
        inputs.append(doc)
    return inputs


def _read(parse_file, file: Path, doc_id: str, shown: str, metadata: dict):
    from kb.ingest import IngestOutcome

    try:
        doc = parse_file(file, doc_id, name=shown)
    except KBError as exc:
        return IngestOutcome.failure(shown, exc, doc_id)
    doc.metadata = dict(metadata)
    return doc


def _directory_inputs(root: Path, shown: str) -> list:
    """``(file, relative id)`` for every supported file under ``root`` (symlinked folders are not
    followed), sorted; a folder that cannot be listed or a file of another type is an IngestOutcome."""
    from kb.documents import file_name
    from kb.ingest import SKIPPED, IngestOutcome
    from kb.parsing import PARSERS

    found: list = []

    def unreadable(error: OSError) -> None:
        where = file_name(Path(error.filename or "").relative_to(root).as_posix()) if error.filename else ""
        found.append(
            IngestOutcome.failure(f"{shown.rstrip('/')}/{where}", f"cannot list this folder ({error.strerror}).")
        )

    for folder, dirs, files in os.walk(root, onerror=unreadable):
        dirs.sort()
        for name in sorted(files):
            relative = file_name((Path(folder) / name).relative_to(root).as_posix())
            if Path(name).suffix.lower() in PARSERS:
                found.append((Path(folder) / name, relative))
            else:
                reason = f"unsupported file type {Path(name).suffix or '(none)'}"
                found.append(IngestOutcome(f"{shown.rstrip('/')}/{relative}", SKIPPED, reason=reason))
    return found


def _ingest_table(kb_name: str, report) -> str:
    from kb.ingest import INGESTED

    head = (
        f"{kb_name}: {len(report.outcomes)} inputs: {report.count(INGESTED)} ingested, {report.skipped} skipped, "
        f"{report.failed} failed; {report.chunks} chunks: {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.removed} removed ({report.seconds:.1f} s)"
    )
    if not report.complete:
        head += "\nstopped before the end: run the same command again to finish"
    rows = [
        (o.status, o.name or o.doc_id, o.chunks, o.added, o.updated, o.unchanged, o.removed, o.reason)
        for o in report.outcomes
    ]
    header = ["status", "input", "chunks", "added", "updated", "unchanged", "removed", "reason"]
    return head + ("\n\n" + _table(rows, header) if rows else "")


def cmd_ingest(args) -> int:
    from kb.documents import text_document
    from kb.ingest import IngestOutcome, IngestReport

    if not args.paths and args.text is None:
        raise InvalidInput("Give files or directories to ingest, or --text '...'.")
    if args.doc_id and len(args.paths) + (args.text is not None) > 1:
        raise InvalidInput("--doc-id names one document; give one file or --text with it.")
    if args.doc_id and args.paths and Path(args.paths[0]).is_dir():
        raise InvalidInput("--doc-id names one document; a folder's files are named by their paths in it.")
    options = _chunking(args)
    inputs = collect_documents(args.paths, args) if args.paths else []
    if args.text is not None:
        if not args.text.strip():
            raise InvalidInput("--text is empty.")
        metadata = json_object(args.metadata, "--metadata") or {}
        inputs.append(text_document(args.text, args.doc_id, title=args.title or "", metadata=metadata))
    if all(isinstance(i, IngestOutcome) for i in inputs):  # nothing readable: create no knowledge base
        kb_name, report = args.kb, IngestReport(outcomes=inputs).tally()
    else:
        lib = _library(args)
        embedder = make_embedder(args.embedder) if args.embedder else None
        kb = lib.get_or_create(args.kb, embedder) if args.embedder else lib.get_or_create(args.kb)
        report = kb.ingest(inputs, options, progress=_progress("embedding", args.json))
        kb_name = kb.name
    _emit(args, {"kb": kb_name, **report.as_dict()}, _ingest_table(kb_name, report))
    if report.failed:
        first = report.errors[0]
        more = f" ({report.failed - 1} more listed above)" if report.failed > 1 else ""
        print(f"error: {report.failed} of {len(report.outcomes)} inputs failed: {first}{more}", file=sys.stderr)
        return 1
    return 0


def _hits_table(hits) -> str:
    if not hits:
        return "(no results)"
    out = []
    for i, h in enumerate(hits, 1):
        evidence = []
        if h.semantic_rank:
            evidence.append(f"semantic #{h.semantic_rank} {h.semantic_score:.3f}")
        if h.keyword_rank:
            evidence.append(f"keyword #{h.keyword_rank} {h.keyword_score:.3f}")
        snippet = " ".join(h.content.split())
        snippet = snippet[:160] + ("…" if len(snippet) > 160 else "")
        out.append(f"{i}. [{h.score:.3f}] {h.title or h.doc_id}  ({'; '.join(evidence)})\n   {snippet}")
    return "\n".join(out)


def cmd_search(args) -> int:
    lib = _library(args)
    kb = lib.get(args.kb)
    hits = kb.search(
        args.query,
        top_k=args.top_k,
        mode=args.mode,
        fusion=args.fusion,
        vector_weight=args.vector_weight,
        where=json_object(args.filter, "--filter"),
        score_threshold=args.threshold,
    )
    _emit(args, [h.as_dict() for h in hits], _hits_table(hits))
    return 0


def cmd_list(args) -> int:
    infos = _library(args).list()
    rows = [(i.name, i.chunks, i.embedder, i.dimension, i.created_at) for i in infos]
    _emit(
        args,
        [i.__dict__ for i in infos],
        _table(rows, ["name", "chunks", "embedder", "dim", "created"]) if rows else "(no knowledge bases)",
    )
    return 0


def cmd_stats(args) -> int:
    stats = _library(args).get(args.kb).stats()
    _emit(args, stats, "\n".join(f"{k}: {v}" for k, v in stats.items()))
    return 0


def cmd_docs(args) -> int:
    docs = _library(args).get(args.kb).documents()
    rows = [(d["doc_id"], d["title"], d["chunks"], json.dumps(d["metadata"], ensure_ascii=False)) for d in docs]
    _emit(args, docs, _table(rows, ["doc_id", "title", "chunks", "metadata"]) if rows else "(no documents)")
    return 0


def cmd_delete(args) -> int:
    kb = _library(args).get(args.kb)
    removed = kb.delete_document(args.doc)
    _emit(
        args,
        {"kb": kb.name, "doc_id": args.doc, "chunks_removed": removed},
        f"{kb.name}: deleted {args.doc!r} ({removed} chunks)",
    )
    return 0


def cmd_drop(args) -> int:
    lib = _library(args)
    kb = lib.get(args.kb)
    if not args.yes:
        raise InvalidInput(f"Dropping {kb.name!r} deletes all its documents; add --yes to confirm.")
    lib.drop(kb.name)
    _emit(args, {"dropped": kb.name}, f"dropped {kb.name!r}")
    return 0


def cmd_rebuild(args) -> int:
    kb = _library(args).get(args.kb)
    n = kb.rebuild_keyword_index(progress=_progress("indexing", args.json))
    _emit(args, {"kb": kb.name, "chunks_indexed": n}, f"{kb.name}: keyword index rebuilt from Chroma ({n} chunks)")
    return 0


def cmd_move(args) -> int:
    from kb.library import Library
    from kb.server_store import ENV_SERVER, ServerConfig, ServerStore
    from kb.store import Store
    from kb.transfer import copy_knowledge_base

    config = ServerConfig.from_env()
    if config is None:
        raise InvalidInput(f"Set {ENV_SERVER} to the Chroma server's URL (http://host:port) to move KBs.")
    embedded = Library(store=Store(args.data_dir))
    server = Library(store=ServerStore(config, args.data_dir))
    source, target = (embedded, server) if args.to == "server" else (server, embedded)
    n = copy_knowledge_base(
        source, target, args.kb, drop_source=not args.keep, progress=_progress("copying", args.json)
    )
    verb = "copied" if args.keep else "moved"
    _emit(
        args,
        {"kb": args.kb, "to": args.to, "chunks": n, "source_kept": args.keep},
        f"{args.kb}: {verb} to the {args.to} store ({n} chunks, nothing embedded again)",
    )
    return 0


def cmd_server(args) -> int:
    from kb.local_server import run_local_server

    return run_local_server(Path(args.path) if args.path else None, args.host, args.port)


def cmd_eval(args) -> int:
    from kb.eval import evaluate

    result = evaluate(
        Path(args.dataset),
        data_dir=args.data_dir,
        embedder=args.embedder,
        mode=args.mode,
        fusion=args.fusion,
        n_queries=args.queries,
        split=args.split,
        progress=_progress("ingesting", args.json),
    )
    _emit(args, result, "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


def cmd_demo(args) -> int:
    from importlib import resources

    from kb.library import Library

    lib = Library(args.data_dir)
    sample = resources.files("kb.resources") / "sample"
    with resources.as_file(sample) as folder:
        ns = argparse.Namespace(metadata=None, doc_id=None, title=None)
        inputs = collect_documents([str(folder)], ns)
    kb = lib.get_or_create("demo 演示", make_embedder(DEFAULT_EMBEDDER))
    report = kb.ingest(inputs, progress=_progress("embedding", False))
    print(
        f"Ingested {report.documents} sample documents into {kb.name!r} ({report.chunks} chunks, "
        f"{report.added} embedded now, {report.unchanged} already there) at {lib.data_dir}\n"
    )
    for query in SAMPLE_QUERIES:
        print(f"Q: {query}")
        print(_hits_table(kb.search(query, top_k=3)))
        print()
    return 0 if not report.failed else 1


def cmd_serve(args) -> int:
    """The knowledge page (``kb.web``) on this machine until Ctrl-C."""
    import os

    from kb.library import Library
    from kb.web import WebApp
    from kb.web.server import LOOPBACK, serve

    key = args.api_key or os.environ.get("CHROMA_KB_UI_KEY") or None
    if args.host not in LOOPBACK and not key:
        raise InvalidInput(
            f"Serving on {args.host} makes the page reachable from other machines; set --api-key (or "
            "$CHROMA_KB_UI_KEY) so that only people with the key can use it."
        )
    if not 0 <= args.port <= 65535:
        raise InvalidInput(f"--port must be from 0 (a free port) to 65535; got {args.port}.")
    app = WebApp(Library(args.data_dir), api_key=key)
    try:
        serve(app, args.host, args.port, announce=lambda line: print(line, flush=True))
    except OSError as exc:
        raise InvalidInput(f"Cannot listen on {args.host}:{args.port}: {exc.strerror or exc}.") from None
    except KeyboardInterrupt:
        pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", help="data directory (default: $CHROMA_KB_DATA_DIR or ~/.local/share/chroma_kb)")
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = argparse.ArgumentParser(prog="python -m kb", description="Embedded Chroma knowledge bases with hybrid search.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help: str, kb: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, parents=[common], help=help, description=help)
        sp.set_defaults(func=func)
        if kb:
            sp.add_argument("--kb", required=True, help="knowledge base name (any language)")
        return sp

    sp = add("ingest", cmd_ingest, "ingest files, directories or --text into a knowledge base")
    sp.add_argument("paths", nargs="*", help="files or directories (.txt .md .html .pdf .docx .csv .json)")
    sp.add_argument("--text", help="ingest this text as one document")
    sp.add_argument("--doc-id", help="document id (default: file name, or a hash of --text)")
    sp.add_argument("--title", help="document title (default: from the file)")
    sp.add_argument("--metadata", help='metadata for every document, JSON, e.g. \'{"lang": "zh"}\'')
    sp.add_argument(
        "--embedder",
        help=f"for a new KB: {', '.join(LOCAL_EMBEDDERS)}, none or openai:<model> "
        "(default e5; an existing KB keeps its own)",
    )
    chunking = DEFAULT_CHUNKING
    sp.add_argument("--chunk-mode", default=chunking.mode, choices=["general", "parent_child"])
    sp.add_argument(
        "--separator",
        default=chunking.separator.encode("unicode_escape").decode(),
        help="first split on this (default %(default)s)",
    )
    sp.add_argument("--chunk-size", type=int, default=chunking.max_tokens, help="max tokens per chunk (or parent)")
    sp.add_argument("--overlap", type=int, default=chunking.overlap, help="overlap in tokens")
    sp.add_argument(
        "--child-chunk-size", type=int, default=chunking.child_max_tokens, help="parent_child: max tokens per child"
    )
    sp.add_argument(
        "--child-overlap", type=int, default=chunking.child_overlap, help="parent_child: child overlap in tokens"
    )

    sp = add("search", cmd_search, "hybrid, semantic or keyword search")
    sp.add_argument("query")
    sp.add_argument("--mode", default=DEFAULT_MODE, choices=MODES)
    sp.add_argument("--fusion", default=DEFAULT_FUSION, choices=FUSIONS)
    sp.add_argument(
        "--vector-weight",
        type=float,
        help=f"0-1, semantic share for zscore/weighted (default: zscore adapts it per query, weighted "
        f"uses {DEFAULT_VECTOR_WEIGHT})",
    )
    sp.add_argument("--top-k", type=int, default=DEFAULT_TOP_K)
    sp.add_argument("--threshold", type=float, default=0.0, help="drop hits scoring below this (0-1)")
    sp.add_argument("--filter", help='metadata filter, Chroma where syntax, e.g. \'{"year": {"$gte": 2024}}\'')

    add("list", cmd_list, "list knowledge bases", kb=False)
    add("stats", cmd_stats, "statistics of a knowledge base")
    add("docs", cmd_docs, "list the documents of a knowledge base")
    sp = add("delete", cmd_delete, "delete a document (all its chunks)")
    sp.add_argument("--doc", required=True, help="document id")
    sp = add("drop", cmd_drop, "delete a whole knowledge base")
    sp.add_argument("--yes", action="store_true", help="confirm")
    add("rebuild-index", cmd_rebuild, "rebuild the keyword index from Chroma")
    sp = add("move", cmd_move, "move a KB between the embedded store and the Chroma server ($CHROMA_KB_SERVER)")
    sp.add_argument("--to", required=True, choices=["server", "embedded"], help="where the KB goes")
    sp.add_argument("--keep", action="store_true", help="keep the KB in the source too (a copy)")
    sp = add("server", cmd_server, "run a local Chroma server (chroma run) for server mode", kb=False)
    sp.add_argument("--path", help="where the server keeps its data (default: <data dir>/chroma-server)")
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    sp.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")

    sp = add("eval", cmd_eval, "evaluate retrieval on a BEIR-layout folder", kb=False)
    sp.add_argument("--dataset", required=True, help="folder with corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    sp.add_argument("--embedder", default=DEFAULT_EMBEDDER, help=f"{', '.join(LOCAL_EMBEDDERS)}, none")
    sp.add_argument("--mode", default="hybrid", choices=MODES)
    sp.add_argument("--fusion", default=DEFAULT_FUSION, choices=FUSIONS)
    sp.add_argument("--queries", type=int, help="evaluate only the first N queries")
    sp.add_argument("--split", default="test", help="qrels file to use (default test)")

    add("demo", cmd_demo, "ingest the bundled Chinese/English sample and run a few hybrid queries", kb=False)

    sp = add("serve", cmd_serve, "the knowledge page: manage, upload and test retrieval in a browser", kb=False)
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    sp.add_argument("--port", type=int, default=0, help="port (default: a free one, printed at start)")
    sp.add_argument("--api-key", help="require this key on every data call (default $CHROMA_KB_UI_KEY; none)")
    return p


# Arguments that name files: their bytes need not be UTF-8 (``kb.documents.file_name`` shows them).
_PATH_ARGUMENTS = {"paths", "data_dir", "dataset", "func", "command", "path"}


def _check_text_arguments(args) -> None:
    """Text arguments must be text: bytes that are not UTF-8 in ``argv`` arrive as lone surrogates,
    which nothing can store or print; say which argument holds them."""
    from kb.records import is_text

    for key, value in vars(args).items():
        if key not in _PATH_ARGUMENTS and isinstance(value, str) and not is_text(value):
            flag = "the query" if key == "query" else "--" + key.replace("_", "-")
            raise InvalidInput(f"{flag} holds bytes that are not valid UTF-8; pass it as UTF-8 text.")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text.encode("utf-8", "backslashreplace").decode("utf-8") or exc.__class__.__name__


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        _check_text_arguments(args)
        return args.func(args)
    except KBError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
