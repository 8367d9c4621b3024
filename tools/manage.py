"""Manage knowledge bases: list them, list documents, delete a document, drop a KB."""

from __future__ import annotations

from collections.abc import Generator

from dify_adapter import params as p
from dify_adapter import tooling
from dify_adapter.output import cap
from kb import InvalidInput

ACTIONS = ("list_knowledge_bases", "list_documents", "delete_document", "drop_knowledge_base")
MAX_LISTED_DOCUMENTS = 2000


class ManageTool(tooling.KBTool):  # via the module: the SDK loads the one Tool subclass it finds here
    def run(self, params: dict) -> Generator:
        action = p.choice(params, "action", ACTIONS, "list_knowledge_bases")
        library = self.library
        if action == "list_knowledge_bases":
            infos = library.list()
            data = [i.__dict__ for i in infos]
            text = "\n".join(f"- {i.name}: {i.chunks} chunks, embedder {i.embedder}" for i in infos)
            yield from self._done(data, text or "No knowledge bases yet.")
            return
        name = p.one_name(params, "knowledge_base_name") or p.one_name(params, "knowledge_base")
        if not name:
            raise InvalidInput("Pick the knowledge base this action applies to.")
        kb = library.get(name)
        if action == "list_documents":
            docs = kb.documents()
            shown = docs[:MAX_LISTED_DOCUMENTS]
            text = "\n".join(f"- {d['doc_id']} ({d['chunks']} chunks) {d['title']}" for d in shown)
            if len(docs) > len(shown):
                text += f"\n… and {len(docs) - len(shown)} more"
            yield from self._done(
                {"knowledge_base": kb.name, "total": len(docs), "documents": shown},
                text or f"{kb.name} has no documents.",
            )
        elif action == "delete_document":
            doc_id = p.text(params, "document_id")
            if not doc_id:
                raise InvalidInput("Give the 'Document ID' to delete (see action 'list documents').")
            removed = kb.delete_document(doc_id)
            yield from self._done(
                {"knowledge_base": kb.name, "document_id": doc_id, "chunks_removed": removed},
                f"Deleted {doc_id!r} from {kb.name} ({removed} chunks).",
            )
        else:
            if not p.boolean(params, "confirm"):
                raise InvalidInput(f"Dropping {kb.name!r} deletes all its documents; set 'Confirm' to true to proceed.")
            library.drop(kb.name)
            yield from self._done({"dropped": kb.name}, f"Dropped knowledge base {kb.name!r}.")

    def _done(self, data, text: str) -> Generator:
        yield self.create_variable_message("error", "")
        yield self.create_json_message({"data": data} if isinstance(data, list) else data)
        yield self.create_text_message(cap(text))
