"""Thin glue between the Dify plugin SDK and the engine (``kb``): where data lives per workspace,
Dify models as embedders/rerankers, file download, parameter parsing and output shaping.
Tools and endpoints import from here; ``kb`` never imports this package."""
