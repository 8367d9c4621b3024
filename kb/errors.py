"""One exception family. ``str(error)`` is a message a user can act on; adapters show it as is."""


class KBError(Exception):
    """Base class of every error the engine raises on purpose."""


class InvalidInput(KBError):
    """A parameter, name, filter or file the caller gave is not acceptable."""


class NotFound(KBError):
    """A knowledge base or document does not exist."""


class EmbedderMismatch(KBError):
    """The embedder offered does not match the one that built the knowledge base."""


class EmbedderError(KBError):
    """The embedding model could not be reached or answered badly."""


class StoreBusy(KBError):
    """Another process holds the write lock for longer than we are willing to wait."""


class ParseError(InvalidInput):
    """A file could not be turned into text."""


class StorageError(KBError):
    """Chroma or the file system failed underneath (damaged files, a full disk, no permission)."""
