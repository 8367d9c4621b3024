"""PDF -> text with pypdf (pure Python, maintained), page by page within the file's budget.

Encrypted PDFs are opened as readers open them: with the empty password when it works (pypdf needs
``cryptography`` for AES, the usual cipher since PDF 1.6); a PDF that needs a real password is
refused with a message saying so. pypdf's own limits on decompressed streams raise
``LimitReachedError``, which becomes a ParseError like every other failure.
"""

from __future__ import annotations

import io
import logging
import re
import unicodedata

from kb.errors import ParseError
from kb.limits import Budget

# pypdf logs each oddity of a damaged file as a warning; the ParseError below is what a user reads.
logging.getLogger("pypdf").setLevel(logging.ERROR)

# PDF fonts often map common Chinese characters to the look-alike Kangxi radicals (⼯ U+2F2F for
# 工): NFKC turns them back, so that chunks read, embed and match as the characters they show.
_KANGXI = re.compile("[\u2e80-\u2ef3\u2f00-\u2fd5]")


def parse_pdf(data: bytes, name: str, budget: Budget) -> tuple[str, str]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError(f"{name}: the PDF is protected by a password; remove the password and try again.")
        pages = []
        for page in reader.pages:
            budget.check()
            pages.append(budget.take((page.extract_text() or "").strip()))
        title = (reader.metadata.title or "") if reader.metadata else ""
    except (DependencyError, FileNotDecryptedError) as exc:
        raise ParseError(f"{name}: the PDF is encrypted in a way that cannot be opened here ({exc}).") from exc
    except LimitReachedError as exc:
        raise ParseError(f"{name}: a stream of the PDF decompresses beyond pypdf's safety limit ({exc}).") from exc
    text = _KANGXI.sub(lambda m: unicodedata.normalize("NFKC", m.group()), "\n\n".join(p for p in pages if p))
    if not text.strip():
        raise ParseError(f"{name}: the PDF has no text layer (a scan?); run OCR on it first.")
    return text, str(title)
