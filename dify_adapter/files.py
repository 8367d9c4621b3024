"""Dify file objects -> bytes, streamed with real timeouts and a size cap.

The SDK's ``File.blob`` uses a 5 s timeout read at import time, too short for large uploads."""

from __future__ import annotations

import httpx

from kb import MAX_FILE_BYTES, InvalidInput

TIMEOUT = httpx.Timeout(120.0, connect=15.0)


def file_name(file) -> str:
    name = getattr(file, "filename", None) or "upload"
    ext = getattr(file, "extension", None) or ""
    if ext and not name.lower().endswith(ext.lower()):
        name += ext if ext.startswith(".") else f".{ext}"
    return name


def download(file, *, max_bytes: int = MAX_FILE_BYTES, transport: httpx.BaseTransport | None = None) -> bytes:
    name = file_name(file)
    url = getattr(file, "url", "")
    if not str(url).startswith(("http://", "https://")):
        raise InvalidInput(f"{name}: Dify sent no usable download URL; set FILES_URL (or INTERNAL_FILES_URL) in Dify.")
    data = bytearray()
    try:
        with (
            httpx.Client(timeout=TIMEOUT, transport=transport, follow_redirects=True) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise InvalidInput(
                    f"{name}: download failed with HTTP {response.status_code} (the link lasts 5 minutes)."
                )
            for part in response.iter_bytes():
                data.extend(part)
                if len(data) > max_bytes:
                    raise InvalidInput(f"{name}: larger than {max_bytes // 2**20} MB; split it first.")
    except httpx.HTTPError as exc:
        raise InvalidInput(f"{name}: could not download it from Dify ({exc.__class__.__name__}: {exc}).") from exc
    return bytes(data)
