from dify_plugin import ToolProvider


class ChromaKBProvider(ToolProvider):
    """No credentials: the store is embedded and models come from the workspace."""

    def _validate_credentials(self, credentials: dict) -> None:
        return None
