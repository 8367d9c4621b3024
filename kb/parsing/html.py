"""HTML -> text with BeautifulSoup and the standard library's parser: scripts and styles dropped,
the <title> kept as the title, runs of blank lines folded into paragraph breaks."""

from __future__ import annotations

from collections.abc import Iterable

from kb.limits import Budget
from kb.parsing.text import decode_text


def parse_html(data: bytes, name: str, budget: Budget) -> tuple[str, str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(decode_text(data, name), "html.parser")
    budget.check()
    title = soup.title.get_text(strip=True) if soup.title else ""
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    return budget.take(paragraphs(lines)), title


def paragraphs(lines: Iterable[str]) -> str:
    """Join lines, turning runs of empty lines into one paragraph break."""
    out: list[str] = []
    blank = False
    for line in lines:
        if line:
            if blank and out:
                out.append("")
            out.append(line)
            blank = False
        else:
            blank = True
    return "\n".join(out)
