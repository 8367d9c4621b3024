"""What the benchmarks share: where the datasets are, the machine, the report formats."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("CHROMA_KB_DATASETS", ROOT.parent / "shared" / "datasets"))


def shared_dataset(name: str) -> Path:
    folder = DATASETS / name
    if not (folder / "corpus.jsonl").is_file():
        raise SystemExit(f"{folder} not found; put the shared datasets there or set CHROMA_KB_DATASETS.")
    return folder


def corpus_passages(chars: int = 600) -> list[str]:
    """Real text for the speed benchmarks: scifact and medqa-zh documents cut to chunk size."""
    texts = []
    for name in ("scifact", "medqa-zh"):
        with (shared_dataset(name) / "corpus.jsonl").open(encoding="utf-8") as f:
            texts += [(json.loads(line).get("text") or "")[:chars] for line in f if line.strip()]
    return [t for t in texts if t.strip()]


def queries_from(name: str, n: int) -> list[str]:
    out = []
    with (shared_dataset(name) / "queries.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if len(out) >= n:
                break
            if line.strip():
                out.append(json.loads(line)["text"])
    return out


def machine() -> dict:
    import chromadb
    import numpy

    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 2**20:.0f} GB RAM"
    except OSError:
        pass
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": mem,
        "python": platform.python_version(),
        "chromadb": chromadb.__version__,
        "numpy": numpy.__version__,
    }


def write_json(path: str | Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2, ensure_ascii=False), encoding="utf-8")


def report_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
