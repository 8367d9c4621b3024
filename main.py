"""Plugin entry point (``python -m main``). Heavy libraries load lazily, on the first call."""

import logging

from dify_plugin import DifyPluginEnv, Plugin
from dify_plugin.config.logger_format import plugin_logger_handler

for name in ("chroma_kb", "kb", "dify_adapter"):
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.addHandler(plugin_logger_handler)

plugin = Plugin(DifyPluginEnv(MAX_REQUEST_TIMEOUT=600))

if __name__ == "__main__":
    plugin.run()
