"""Uploads in parts and ingest jobs whose status lives in the data directory.

A file reaches the server in parts of at most ``PART_BYTES`` (a proxy such as Dify's plugin daemon
reads at most 10 MB of a request body and truncates the rest silently, so no request may come near
that). Parts are kept under ``<data_dir>/web/uploads/<upload id>/`` and joined when the upload is
finished; the ingest then runs as a job in a background thread of this process, one job at a time,
its status written to ``<data_dir>/web/jobs/<job id>.json`` as it goes. The page polls those
files, so closing the page changes nothing, and another page sees the same jobs.

A job interrupted by a restart (its status still ``queued``, ``parsing`` or ``embedding``) runs
again when the next ``JobRunner`` for the directory starts: ingest is idempotent (content-addressed
chunks), so the second run embeds only what the first did not write. Its file stays in the upload
area until the job ends, so nothing is lost in between. Failed, finished and unchanged jobs drop
their files; a bad file is refused before anything is written to the knowledge base.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

from kb.documents import SourceDocument, file_digest
from kb.errors import InvalidInput, KBError, NotFound
from kb.parsing import MAX_FILE_BYTES, SUPPORTED_EXTENSIONS, file_document
from kb.records import check_metadata

if TYPE_CHECKING:
    from kb.knowledge_base import KnowledgeBase

log = logging.getLogger(__name__)

PART_BYTES = 4 * 1024 * 1024  # far below the 10 MB a Dify endpoint request may carry
ACTIVE = ("queued", "parsing", "embedding")
KEEP_JOBS = 200  # finished jobs kept for the page (the oldest are removed beyond this)
UPLOAD_TTL = 24 * 3600  # unfinished uploads older than this are removed
SAVE_EVERY = 0.5  # seconds between status writes while a job embeds
STALE_TMP = 3600  # a status file's temporary copy this old was left by a killed process


@dataclass
class Job:
    id: str
    kb: str
    filename: str
    size: int
    file_hash: str
    metadata: dict = field(default_factory=dict)
    status: str = "queued"  # queued | parsing | embedding | done | unchanged | failed
    done: int = 0
    total: int = 0
    message: str = ""
    report: dict = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    upload: str = ""  # the upload whose file this job ingests (removed when the job ends)

    def public(self) -> dict:
        out = asdict(self)
        out.pop("upload")
        return out


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def check_upload(filename: object, size: object) -> tuple[str, int]:
    """The checks a file passes before any byte is sent: a usable name, a supported type, not
    empty, not over the limit."""
    if not isinstance(filename, str) or not filename.strip() or "/" in filename or "\\" in filename:
        raise InvalidInput("Give the file's name (without folders).")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidInput("Give the file's size in bytes.")
    suffix = Path(filename).suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise InvalidInput(
            f"{filename}: unsupported file type {suffix or '(none)'}; supported: {', '.join(SUPPORTED_EXTENSIONS)}."
        )
    if size == 0:
        raise InvalidInput(f"{filename}: the file is empty.")
    if size > MAX_FILE_BYTES:
        raise InvalidInput(
            f"{filename}: {size / 2**20:.1f} MB is over the limit of {MAX_FILE_BYTES // 2**20} MB per file; "
            "split it into smaller files."
        )
    return filename.strip(), size


class JobRunner:
    """Uploads and ingest jobs of one data directory. ``open_kb(name)`` opens a knowledge base
    (``Library.get``); jobs run one at a time in a background thread."""

    def __init__(
        self,
        web_dir: Path,
        open_kb: Callable[[str], KnowledgeBase],
        *,
        part_bytes: int = PART_BYTES,
        clock: Callable[[], float] = time.time,
    ):
        self.part_bytes = part_bytes
        self.uploads = web_dir / "uploads"
        self.jobs = web_dir / "jobs"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.jobs.mkdir(parents=True, exist_ok=True)
        self.open_kb = open_kb
        self.clock = clock
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._resume()

    # ------------------------------------------------------------------ uploads
    def start_upload(self, kb: str, filename: object, size: object, metadata: object = None) -> dict:
        name, size = check_upload(filename, size)
        meta = check_metadata(metadata, "metadata")
        self._sweep_uploads()
        upload = uuid.uuid4().hex
        folder = self.uploads / upload
        folder.mkdir()
        parts = -(-size // self.part_bytes)
        info = {
            "kb": kb,
            "filename": name,
            "size": size,
            "parts": parts,
            "part_bytes": self.part_bytes,
            "metadata": meta,
            "created_at": self.clock(),
        }
        _write_json(folder / "upload.json", info)
        return {"upload": upload, "part_bytes": self.part_bytes, "parts": parts}

    def _upload(self, upload: object) -> tuple[Path, dict]:
        if not isinstance(upload, str) or len(upload) != 32 or not all(c in "0123456789abcdef" for c in upload):
            raise NotFound("No such upload; start the upload again.")
        folder = self.uploads / upload
        try:
            return folder, json.loads((folder / "upload.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise NotFound("No such upload (finished, or removed after a day); start the upload again.") from None

    def put_part(self, upload: object, index: object, data: bytes, declared: object = None) -> dict:
        folder, info = self._upload(upload)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < info["parts"]:
            raise InvalidInput(f"Part {index!r} is out of range for a file in {info['parts']} parts.")
        step = info.get("part_bytes", self.part_bytes)
        expected = min(step, info["size"] - index * step)
        if len(data) != expected or (declared is not None and declared != len(data)):
            raise InvalidInput(
                f"Part {index + 1} of {info['filename']} arrived with {len(data)} bytes instead of {expected} "
                f"(a proxy cut the request?); send parts of {step} bytes."
            )
        tmp = folder / f".part-{index:05d}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, folder / f"part-{index:05d}")
        return {"received": index}

    def finish_upload(self, upload: object) -> dict:
        """Join the parts and queue the ingest (or answer at once when the same file is already
        there: same bytes and metadata)."""
        folder, info = self._upload(upload)
        missing = [i + 1 for i in range(info["parts"]) if not (folder / f"part-{i:05d}").exists()]
        if missing:
            raise InvalidInput(f"{info['filename']}: parts {missing[:5]} never arrived; send them, then finish again.")
        target = folder / "file"
        with open(target, "wb") as out:
            for i in range(info["parts"]):
                part = folder / f"part-{i:05d}"
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out)
                part.unlink()
        data = target.read_bytes()
        now = self.clock()
        job = Job(
            id=uuid.uuid4().hex,
            kb=info["kb"],
            filename=info["filename"],
            size=len(data),
            file_hash=file_digest(data),
            metadata=info.get("metadata") or {},
            created_at=now,
            updated_at=now,
            upload=cast(str, upload),  # _upload() accepted it as an upload id
        )
        kb = self.open_kb(job.kb)
        stored = kb.document(job.filename)
        if stored and stored["file_hash"] == job.file_hash and stored["metadata"] == job.metadata:
            job.status, job.done, job.total = "unchanged", stored["chunks"], stored["chunks"]
            job.message = "Unchanged: the same file is already in the knowledge base."
            shutil.rmtree(folder, ignore_errors=True)
            job.upload = ""
            self._save(job)
            return job.public()
        self._save(job)
        self._kick()
        return job.public()

    def _sweep_uploads(self) -> None:
        """Remove uploads that were started but never finished, a day after they started."""
        active = {j.upload for j in self._all() if j.status in ACTIVE}
        for folder in self.uploads.iterdir():
            if folder.name in active:
                continue
            try:
                age = self.clock() - folder.stat().st_mtime
            except OSError:
                continue
            if age > UPLOAD_TTL:
                shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------------ jobs
    def _save(self, job: Job) -> None:
        job.updated_at = self.clock()
        _write_json(self.jobs / f"{job.id}.json", asdict(job))

    def _all(self) -> list[Job]:
        out = []
        for path in self.jobs.glob("*.json"):
            try:
                out.append(Job(**json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, TypeError):
                continue
        return sorted(out, key=lambda j: j.created_at)

    def list(self, kb: str | None = None) -> list[dict]:
        return [j.public() for j in self._all() if kb is None or j.kb == kb]

    def dismiss(self, kb: str) -> int:
        """Forget the finished jobs of a knowledge base (the page's "clear")."""
        gone = 0
        for job in self._all():
            if job.kb == kb and job.status not in ACTIVE:
                (self.jobs / f"{job.id}.json").unlink(missing_ok=True)
                gone += 1
        return gone

    def _resume(self) -> None:
        # A process killed between writing a status file's copy and renaming it leaves the copy;
        # a fresh one may be another live process's write, so only old ones go.
        for tmp in self.jobs.glob(".*.tmp"):
            try:
                if self.clock() - tmp.stat().st_mtime > STALE_TMP:
                    tmp.unlink()
            except OSError:
                continue
        interrupted = [j for j in self._all() if j.status in ACTIVE]
        for job in interrupted:
            if job.status != "queued":
                job.status, job.message = "queued", "Resumed after a restart."
                self._save(job)
        if interrupted:
            self._kick()

    def _kick(self) -> None:
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="kb-web-jobs", daemon=True)
                self._worker.start()

    def wait_idle(self, timeout: float = 600) -> bool:
        """For tests and shutdown: wait until no job is running (True) or the timeout passes."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
            return not worker.is_alive()
        return True

    def _work(self) -> None:
        while True:
            queued = [j for j in self._all() if j.status in ACTIVE]
            if not queued:
                with self._lock:
                    if not any(j.status in ACTIVE for j in self._all()):
                        self._worker = None
                        self._trim()
                        return
                continue
            self._run(queued[0])

    def _trim(self) -> None:
        finished = [j for j in self._all() if j.status not in ACTIVE]
        for job in finished[: max(0, len(finished) - KEEP_JOBS)]:
            (self.jobs / f"{job.id}.json").unlink(missing_ok=True)

    def _run(self, job: Job) -> None:
        folder = self.uploads / job.upload
        try:
            job.status = "parsing"
            self._save(job)
            try:
                data = (folder / "file").read_bytes()
            except OSError:
                raise InvalidInput(f"{job.filename}: the uploaded file is gone; upload it again.") from None
            doc: SourceDocument = file_document(data, job.filename)
            doc.metadata = dict(job.metadata)
            kb = self.open_kb(job.kb)
            job.status = "embedding"
            self._save(job)
            last = [0.0]

            def progress(done: int, total: int) -> None:
                job.done, job.total = done, total
                if time.monotonic() - last[0] >= SAVE_EVERY:
                    last[0] = time.monotonic()
                    self._save(job)

            report = kb.ingest([doc], progress=progress).as_dict()
            job.report = report
            errors = report.get("errors") or []
            if report.get("failed") and not report.get("documents"):
                job.status, job.message = "failed", str(errors[0]) if errors else "The file could not be ingested."
            else:
                job.status, job.message = "done", ""
                job.done = job.total = int(report.get("chunks", job.total) or 0)
        except KBError as exc:
            job.status, job.message = "failed", str(exc)
        except Exception:  # a fault of ours: logged with its traceback, shown as one line
            log.exception("ingest job %s failed", job.id)
            job.status, job.message = "failed", "Internal error while ingesting; see the server log."
        shutil.rmtree(folder, ignore_errors=True)
        job.upload = ""
        self._save(job)
