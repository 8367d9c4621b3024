"""scripts/package.py: what goes into the .difypkg, and what makes it refuse to build."""

import shutil
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import package  # noqa: E402


def test_package_has_the_plugin_and_nothing_else(tmp_path):
    target = package.build(tmp_path)
    assert target.name == "chroma_kb-0.1.0.difypkg"
    with zipfile.ZipFile(target) as zf:
        names = zf.namelist()
        readme = zf.read("README.md").decode()
    assert names == sorted(names)
    for required in (
        "manifest.yaml",
        "main.py",
        "requirements.txt",
        "uv.toml",
        "PRIVACY.md",
        "_assets/icon.svg",
        "provider/chroma_kb.yaml",
        "tools/ingest.yaml",
        "tools/retrieve.py",
        "kb/keyword/index.py",
        "dify_adapter/workspace.py",
        "kb/resources/minilm-tokenizer.json",
        "readme/README_zh_Hans.md",
    ):
        assert required in names
    for name in names:
        assert not name.startswith(("tests/", "scripts/", ".venv/", ".git/", "docs/", "bench/", "dist/"))
        assert "__pycache__" not in name and name not in ("pyproject.toml", "requirements-dev.txt", "uv.lock")
        assert not name.startswith("requirements") or name == "requirements.txt"
    assert readme == (ROOT / "docs" / "plugin" / "README.md").read_text()
    assert "\ndify-plugin==" in zipfile.ZipFile(target).read("requirements.txt").decode()  # uv writes normalised names


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "plugin"
    keep = [
        "manifest.yaml",
        "main.py",
        "requirements.txt",
        "uv.toml",
        "PRIVACY.md",
        ".difyignore",
        "_assets",
        "provider",
        "tools",
        "docs",
        "readme",
        "pyproject.toml",
        "group",
        "endpoints",
    ]
    root.mkdir()
    for name in keep:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, root / name)
        else:
            shutil.copy(src, root / name)
    return root


@pytest.mark.parametrize(
    "breakage,message",
    [
        (lambda r: (r / "_assets" / "icon.svg").unlink(), "_assets/icon.svg is missing"),
        (lambda r: (r / "PRIVACY.md").write_text(""), "PRIVACY.md is missing or empty"),
        (lambda r: (r / "tools" / "ingest.py").unlink(), "tools/ingest.py"),
        (lambda r: (r / "tools" / "retrieve.yaml").write_text("identity: [oops"), "invalid YAML"),
        (
            lambda r: (r / "manifest.yaml").write_text(
                (r / "manifest.yaml").read_text().replace("version: 0.1.0", "version: one")
            ),
            "version",
        ),
        (
            lambda r: (r / "manifest.yaml").write_text(
                (r / "manifest.yaml").read_text().replace("author: chromakb", "author: Dify")
            ),
            "author",
        ),
        (
            lambda r: (r / ".difyignore").write_text((r / ".difyignore").read_text().replace("pyproject.toml\n", "")),
            "pyproject.toml would be packaged",
        ),
        (lambda r: (r / "uv.toml").unlink(), "uv.toml would be missing"),
    ],
)
def test_broken_plugins_are_refused_before_writing(tree, tmp_path, breakage, message):
    breakage(tree)
    with pytest.raises(package.PackageError, match=message):
        package.build(tmp_path / "out", tree)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_oversized_package_is_refused(tree, tmp_path, monkeypatch):
    monkeypatch.setattr(package, "MAX_UNPACKED", 1000)
    with pytest.raises(package.PackageError, match="limit is 50 MB"):
        package.build(tmp_path / "out", tree)
