"""The keyword index's one error: its files cannot be used, so the index must be rebuilt."""


class IndexUnusable(Exception):
    """The files on disk cannot be used (missing, corrupt, torn, other format, tokenizer or BM25
    parameters): rebuild the index from the source of truth."""
