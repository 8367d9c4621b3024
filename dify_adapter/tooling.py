"""What every tool shares: user errors as clean output, the dynamic list of the workspace's
knowledge bases, and progress streaming for long work."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from typing import Any

from dify_plugin import Tool
from dify_plugin.entities import I18nObject, ParameterOption

from dify_adapter.workspace import workspace_library
from kb import KBError

log = logging.getLogger("chroma_kb")


class KBTool(Tool):
    """Subclasses implement ``run`` (a generator of messages) instead of ``_invoke``."""

    def run(self, params: dict) -> Generator:
        raise NotImplementedError

    def empty_outputs(self) -> dict[str, Any]:
        """Variables to emit when the tool fails, so downstream nodes still get valid values."""
        return {}

    def _invoke(self, tool_parameters: dict) -> Generator:
        try:
            yield from self.run(tool_parameters)
        except KBError as exc:
            # A user error: say it plainly. Raising would make Dify show the SDK's traceback.
            message = str(exc)
            log.info("user error in %s: %s", type(self).__name__, message)
            for name, value in self.empty_outputs().items():
                yield self.create_variable_message(name, value)
            yield self.create_variable_message("error", message)
            yield self.create_text_message(f"Error: {message}")

    @property
    def library(self):
        return workspace_library(self.session.storage)

    def _fetch_parameter_options(self, parameter: str) -> list[ParameterOption]:
        if parameter not in ("knowledge_base", "knowledge_bases"):
            return []
        try:
            infos = self.library.list()
        except KBError as exc:  # an options list cannot carry a message: the tools' calls say it
            log.warning("cannot list knowledge bases: %s", exc)
            return []
        return [
            ParameterOption(
                value=info.name,
                label=I18nObject(en_US=f"{info.name} ({info.chunks} chunks, {info.embedder})"),
            )
            for info in infos
        ]

    def stream_progress(self, work: Callable[[Callable[[int, int], None]], Any], label: str, every: float = 2.0):
        """Run ``work(progress)`` in a greenlet and yield a log message at most every ``every`` s.

        The engine yields to gevent between batches, so this loop (and the SDK's heartbeat) keep
        running during long ingests. ``yield from`` returns ``work``'s result or raises its error."""
        import gevent

        latest: list[tuple[int, int]] = []
        job = gevent.spawn(work, lambda done, total: latest.append((done, total)))
        last = 0.0
        while not job.ready():
            job.join(timeout=every)
            if latest and time.monotonic() - last >= every:
                done, total = latest[-1]
                latest.clear()
                last = time.monotonic()
                yield self.create_log_message(label=f"{label}: {done}/{total}", data={"done": done, "total": total})
        return job.get()
