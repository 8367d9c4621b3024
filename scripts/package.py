"""Build ``dist/chroma_kb-<version>.difypkg``: a zip of the plugin directory as the Dify daemon
expects it (files at the root, sorted, forward slashes), honouring ``.difyignore``.

Before writing, it validates the manifest and every YAML it references with the SDK's own models
(plus the daemon's stricter rules for author, name and version), checks that every referenced
source file and asset exists, and refuses a package over 50 MB unpacked.

    .venv/bin/python scripts/package.py [--out DIR]
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path

import pathspec
import yaml

ROOT = Path(__file__).resolve().parents[1]
MAX_UNPACKED = 50 * 1024 * 1024
PLUGIN_README = "docs/plugin/README.md"  # packaged as README.md (the page Dify shows)
VERSION_RE = re.compile(r"^\d{1,4}(\.\d{1,4}){2}(-\w{1,16})?$")
NAME_RE = re.compile(r"^[a-z0-9_-]{1,128}$")
AUTHOR_RE = re.compile(r"^[a-z0-9_-]{1,64}$")


class PackageError(Exception):
    pass


def _load(root: Path, rel: str) -> dict:
    path = root / rel
    if not path.is_file():
        raise PackageError(f"{rel} is missing")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PackageError(f"{rel}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise PackageError(f"{rel}: expected a mapping")
    return data


def _validate(model, data: dict, where: str) -> None:
    from pydantic import ValidationError

    try:
        model.model_validate(data)
    except ValidationError as exc:
        raise PackageError(f"{where}: {exc}") from exc


def validate(root: Path = ROOT) -> dict:
    """Validate manifest + provider + tools; return the manifest."""
    from dify_plugin.core.entities.plugin.setup import PluginConfiguration
    from dify_plugin.entities.endpoint import EndpointConfiguration, EndpointProviderConfiguration
    from dify_plugin.entities.tool import ToolConfiguration, ToolProviderConfiguration

    manifest = _load(root, "manifest.yaml")
    _validate(PluginConfiguration, manifest, "manifest.yaml")
    if not VERSION_RE.match(str(manifest["version"])):
        raise PackageError(f"manifest.yaml: version {manifest['version']!r} is not x.y.z")
    if not NAME_RE.match(manifest["name"]) or not AUTHOR_RE.match(manifest["author"]):
        raise PackageError("manifest.yaml: name and author must be lowercase letters, digits, _ or -")
    if any(bad in manifest["author"] for bad in ("langgenius", "dify")):
        raise PackageError("manifest.yaml: the Marketplace rejects authors containing 'langgenius' or 'dify'")
    for asset in (manifest.get("icon"), manifest.get("icon_dark")):
        if asset and not (root / "_assets" / asset).is_file():
            raise PackageError(f"_assets/{asset} is missing")
    if not (root / manifest["privacy"]).is_file() or not (root / manifest["privacy"]).read_text().strip():
        raise PackageError(f"{manifest['privacy']} is missing or empty")
    if (root / "pyproject.toml").exists() and not _ignored(root, "pyproject.toml"):
        raise PackageError("pyproject.toml would be packaged; the daemon would install from it, not requirements.txt")
    if not (root / "uv.toml").is_file() or _ignored(root, "uv.toml"):
        raise PackageError("uv.toml would be missing; the daemon would install more than requirements.txt locks")
    for provider_path in manifest["plugins"].get("tools", []):
        provider = _load(root, provider_path)
        tools = provider.get("tools", [])
        provider_for_sdk = {**provider, "tools": []}
        _validate(ToolProviderConfiguration, provider_for_sdk, provider_path)
        _source_exists(root, provider, provider_path)
        for tool_path in tools:
            tool = _load(root, tool_path)
            _validate(ToolConfiguration, tool, tool_path)
            _source_exists(root, tool, tool_path)
    for group_path in manifest["plugins"].get("endpoints", []):
        group = _load(root, group_path)
        _validate(EndpointProviderConfiguration, {**group, "endpoints": []}, group_path)
        for endpoint_path in group.get("endpoints", []):
            endpoint = _load(root, endpoint_path)
            _validate(EndpointConfiguration, endpoint, endpoint_path)
            _source_exists(root, endpoint, endpoint_path)
    if not (root / PLUGIN_README).is_file():
        raise PackageError(f"{PLUGIN_README} is missing")
    return manifest


def _source_exists(root: Path, data: dict, where: str) -> None:
    source = data.get("extra", {}).get("python", {}).get("source")
    if not source or not (root / source).is_file():
        raise PackageError(f"{where}: extra.python.source {source!r} does not exist")


def _spec(root: Path) -> pathspec.PathSpec:
    lines = (root / ".difyignore").read_text(encoding="utf-8").splitlines()
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _ignored(root: Path, rel: str) -> bool:
    return _spec(root).match_file(rel)


def files(root: Path = ROOT) -> dict[str, Path]:
    """Archive name -> file, after .difyignore; the plugin README becomes README.md."""
    spec = _spec(root)
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not spec.match_file(rel):
            out[rel] = path
    out["README.md"] = root / PLUGIN_README
    return dict(sorted(out.items()))


def build(out_dir: Path, root: Path = ROOT) -> Path:
    manifest = validate(root)
    entries = files(root)
    total = sum(p.stat().st_size for p in entries.values())
    if total > MAX_UNPACKED:
        raise PackageError(f"the package would be {total / 2**20:.1f} MB unpacked; the limit is 50 MB")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{manifest['name']}-{manifest['version']}.difypkg"
    tmp = target.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, path in entries.items():
            zf.write(path, name)
    tmp.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "dist"), help="output directory (default dist/)")
    args = parser.parse_args(argv)
    try:
        target = build(Path(args.out))
    except PackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with zipfile.ZipFile(target) as zf:
        unpacked = sum(i.file_size for i in zf.infolist())
        count = len(zf.infolist())
    print(f"{target} ({target.stat().st_size / 2**20:.2f} MB, {unpacked / 2**20:.2f} MB unpacked, {count} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
