"""The package against what the oldest plugin daemon we support validates at install and at
endpoint save. A typical user runs Dify 1.7.1 with plugin daemon 0.2.0; we declare Dify 1.5.1, whose
daemon (0.1.3) is the first that knows the dynamic-select parameter type.

The lists below are copied from the daemon's source at tag 0.1.3 (langgenius/dify-plugin-daemon):
``pkg/entities/plugin_entities/tool_declaration.go`` (isToolParameterType), ``config.go``
(isCredentialType, ValidateProviderConfigs), ``pkg/entities/manifest_entities/tags.go``
(isPluginTag; "rag" arrived in 0.3.0 with datasources). The real daemon in test_real_dify.py is a
newer build (0.6.10-6); this test guards the features an older one would refuse outright."""

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
TOOL_PARAMETER_TYPES = {
    "string", "number", "boolean", "select", "secret-input", "file", "files",
    "app-selector", "model-selector", "any", "dynamic-select",
}  # fmt: skip
SETTING_TYPES = {"secret-input", "text-input", "select", "boolean", "app-selector", "model-selector", "array[tools]"}
TAGS = {
    "search", "image", "videos", "weather", "finance", "design", "travel", "social", "news",
    "medical", "productivity", "education", "business", "entertainment", "utilities", "other", "agent",
}  # fmt: skip
# Model-selector scopes whose endpoint setting the daemon saves without keys the web form never
# sends (rerank needs score_threshold and top_n, tts voice, vision completion_params).
SAVEABLE_SCOPES = {None, "llm", "text-embedding", "speech2text", "moderation"}


def load(rel: str) -> dict:
    return yaml.safe_load((ROOT / rel).read_text(encoding="utf-8"))


def test_manifest_and_provider_tags_are_known_to_old_daemons():
    assert set(load("manifest.yaml").get("tags", [])) <= TAGS
    assert set(load("provider/chroma_kb.yaml")["identity"].get("tags", [])) <= TAGS


def test_declared_minimum_is_the_first_dify_with_dynamic_select():
    manifest = load("manifest.yaml")
    version = tuple(int(p) for p in str(manifest["meta"]["minimum_dify_version"]).split("."))
    assert version == (1, 5, 1) and version <= (1, 7, 1)  # our users' Dify can install it


@pytest.mark.parametrize("tool", load("provider/chroma_kb.yaml")["tools"])
def test_tool_parameter_types_are_known_to_old_daemons(tool):
    for parameter in load(tool)["parameters"]:
        assert parameter["type"] in TOOL_PARAMETER_TYPES, (tool, parameter["name"])


def test_every_endpoint_setting_can_be_saved_by_the_daemon():
    for setting in load("group/chroma_kb.yaml")["settings"]:
        assert setting["type"] in SETTING_TYPES, setting["name"]
        if setting["type"] == "model-selector":
            assert setting.get("scope") in SAVEABLE_SCOPES, setting["name"]
