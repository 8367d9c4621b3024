"""A third English set of another kind, built offline from a Debian package: Python's FAQ.

Debian's ``python3-doc`` ships the reStructuredText sources of the Python documentation
(``/usr/share/doc/python3.X/html/_sources``). Each FAQ entry is a question heading and its answer:

- corpus: every section of the FAQ, the tutorial, the HOWTOs, the language reference and "using
  Python" (about 1,200 sections); an FAQ answer is stored *without* its question (titled with its
  FAQ page and group only), every other section with its page and heading as title;
- queries: the FAQ questions (headings ending in "?"); the relevant document is that question's
  answer. Other sections may answer too (false negatives, as in medqa-zh).

So queries are natural how-to questions in plain English, answered by technical prose with code:
a different kind from scifact's claims and trec-dl's short web queries.

    .venv/bin/python -m bench.python_faq OUT_DIR   # writes corpus.jsonl, queries.jsonl, qrels/test.tsv
"""

from __future__ import annotations

import glob
import json
import re
import sys
from pathlib import Path

PARTS = ("faq", "tutorial", "howto", "reference", "using")
_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+.:_])\1{2,}\s*$")
_ROLE = re.compile(r":[\w:.-]+:`(?:([^`<]*?)\s*<[^`>]*>|~?([^`]*))`")
MIN_CHARS = 80


def source_dir() -> Path | None:
    """The newest installed python3 documentation sources, or None."""
    found = sorted(glob.glob("/usr/share/doc/python3*/html/_sources"))
    return Path(found[-1]) if found else None


def _plain(text: str) -> str:
    text = _ROLE.sub(lambda m: (m.group(1) or m.group(2) or "").strip(), text)
    text = text.replace("``", "")
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith((".. ", ":tocdepth:"))]
    return re.sub(r"\s+", " ", " ".join(lines)).strip()


def _sections(path: Path) -> list[tuple[list[str], str]]:
    """(heading path, body) for each section of one reST file, headings by their underline style."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    styles: list[str] = []  # underline characters in order of first use = levels
    heads: list[str] = []
    out: list[tuple[list[str], list[str]]] = []
    body: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        over = _UNDERLINE.match(line) and i + 2 < len(lines) and _UNDERLINE.match(lines[i + 2])
        if over and lines[i + 1].strip():
            title, mark, step = lines[i + 1].strip(), "o" + line.strip()[0], 3
        elif line.strip() and _UNDERLINE.match(nxt) and len(nxt.strip()) >= len(line.strip()) - 1:
            title, mark, step = line.strip(), nxt.strip()[0], 2
        else:
            body.append(line)
            i += 1
            continue
        out.append((list(heads), body))
        body = []
        if mark not in styles:
            styles.append(mark)
        level = styles.index(mark)
        heads = heads[:level] + [""] * (level - len(heads)) + [title]
        i += step
    out.append((list(heads), body))
    return [(h, _plain("\n".join(b))) for h, b in out if h]


def build(src: Path, out: Path) -> dict[str, int]:
    corpus, queries, qrels = [], [], []
    for part in PARTS:
        for path in sorted((src / part).glob("*.rst.txt")):
            for n, (heads, text) in enumerate(_sections(path)):
                if len(text) < MIN_CHARS:
                    continue
                doc_id = f"{part}/{path.name.removesuffix('.rst.txt')}#{n}"
                question = heads[-1]
                if part == "faq" and question.endswith("?"):
                    title = " — ".join(h for h in heads[:-1] if h)
                    queries.append({"_id": f"q-{doc_id}", "text": question})
                    qrels.append((f"q-{doc_id}", doc_id))
                else:
                    title = " — ".join(h for h in heads if h)
                corpus.append({"_id": doc_id, "title": title, "text": text})
    out.mkdir(parents=True, exist_ok=True)
    (out / "qrels").mkdir(exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in corpus)
    with (out / "queries.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(q, ensure_ascii=False) + "\n" for q in queries)
    with (out / "qrels" / "test.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"{q}\t{d}\t1\n" for q, d in qrels)
    return {"docs": len(corpus), "queries": len(queries)}


if __name__ == "__main__":
    src = source_dir()
    if src is None:
        raise SystemExit("python3-doc is not installed (apt-get install python3-doc).")
    print(build(src, Path(sys.argv[1])))
