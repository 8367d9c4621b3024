"""What gets installed: the locks agree with pyproject.toml and are closed, the package installs
exactly the lock, and `pip install .` gives a working `chroma-kb` command with the engine only."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# The environment every lock is for: CPython 3.12 on linux, x86_64 or aarch64.
TARGETS = [
    {
        **default_environment(),
        "python_version": "3.12",
        "python_full_version": "3.12.1",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": machine,
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }
    for machine in ("x86_64", "aarch64")
]


def locked(name: str) -> dict[str, str]:
    """A lock file's pins, by canonical name."""
    pins = {}
    for line in (ROOT / name).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", line.strip())
        assert match, f"{name}: {line!r} is not an exact name==version pin"
        pins[canonicalize_name(match[1])] = match[2]
    return pins


def direct(*groups: str) -> list[Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    for group in groups:
        reqs += [Requirement(r) for r in PYPROJECT["dependency-groups"][group]]
    return reqs


def excluded() -> set[str]:
    text = (ROOT / "requirements-exclude.in").read_text(encoding="utf-8")
    return {canonicalize_name(line.split("#")[0].strip()) for line in text.splitlines() if line.split("#")[0].strip()}


def annotated_direct(name: str) -> set[str]:
    """Packages the lock says come straight from pyproject.toml (`# via chroma-kb (pyproject.toml...)`)."""
    out, current = set(), None
    for line in (ROOT / name).read_text(encoding="utf-8").splitlines():
        if line and not line.startswith((" ", "#")):
            current = canonicalize_name(line.split("==")[0])
        elif current and "chroma-kb (pyproject.toml" in line:
            out.add(current)
    return out


@pytest.mark.parametrize(
    "lock,groups", [("requirements.txt", ("plugin",)), ("requirements-dev.txt", ("plugin", "dev"))]
)
def test_each_lock_pins_exactly_the_direct_dependencies_pyproject_lists(lock, groups):
    pins = locked(lock)
    reqs = direct(*groups)
    for req in reqs:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is in pyproject.toml but not in {lock}: run scripts/lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"{lock} pins {name}=={pins[name]}, not {req}"
    # A dependency removed from pyproject.toml but still locked as a direct one means a stale lock.
    assert annotated_direct(lock) == {canonicalize_name(r.name) for r in reqs}, "stale lock: run scripts/lock"


def test_the_dev_lock_contains_the_runtime_lock_unchanged():
    runtime, dev = locked("requirements.txt"), locked("requirements-dev.txt")
    assert {name: dev.get(name) for name in runtime} == runtime


def test_excluded_packages_are_in_no_lock_and_never_imported_by_our_code():
    names = excluded()
    assert {"kubernetes", "uvicorn"} <= names
    for lock in ("requirements.txt", "requirements-dev.txt"):
        assert not names & locked(lock).keys()
    modules = {name.replace("-", "_") for name in names}
    for path in ROOT.rglob("*.py"):
        if ".venv" in path.parts:
            continue
        imported = re.findall(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", path.read_text(encoding="utf-8"), re.M)
        assert not modules & set(imported), f"{path.relative_to(ROOT)} imports an excluded package"


@pytest.mark.parametrize("lock", ["requirements.txt", "requirements-dev.txt"])
def test_each_lock_is_closed_on_linux_x86_64_and_aarch64(lock):
    """Every requirement of every locked package is locked too (at a version it accepts) or
    deliberately excluded: installing the lock without resolving (as the daemon does) is whole.
    Reads each package's metadata from this venv, which scripts/bootstrap installs from the lock."""
    pins, skip = locked(lock), excluded()
    problems = []
    for name, version in pins.items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            pytest.skip(f"{name} is not installed here; run `bash scripts/bootstrap --dev`")
        if dist.version != version:
            pytest.skip(f"this venv has {name} {dist.version}, the lock {version}; run scripts/bootstrap")
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate(env) for env in TARGETS):
                continue  # an optional extra, another platform or another Python
            dep = canonicalize_name(req.name)
            if dep in skip:
                continue
            if dep not in pins:
                problems.append(f"{name} needs {req}, which {lock} does not pin")
            elif not req.specifier.contains(pins[dep], prereleases=True):
                problems.append(f"{name} needs {req}, {lock} pins {pins[dep]}")
    assert not problems, "\n".join(problems)


def test_the_package_installs_exactly_the_lock():
    """The daemon runs `uv pip install -r requirements.txt` in the plugin directory; the packaged
    uv.toml turns off dependency resolution there, so what the lock leaves out stays out."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import package

    names = package.files(ROOT)
    assert "uv.toml" in names and "requirements.txt" in names
    assert not {"pyproject.toml", "requirements-dev.txt", "requirements-exclude.in"} & names.keys()
    config = tomllib.loads((ROOT / "uv.toml").read_text(encoding="utf-8"))
    assert config == {"pip": {"no-deps": True}}


@pytest.mark.slow
def test_the_locks_are_what_scripts_lock_writes():
    """Re-resolves both locks from pyproject.toml with the pinned uv (needs PyPI)."""
    uv = Path(sys.executable).parent / "uv"
    if not uv.exists():
        pytest.skip("uv is not installed here; run `bash scripts/bootstrap --dev`")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "lock"), "--check"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


# --- the engine as a pip-installable package -------------------------------------------------------


def _wheel_inputs() -> list[Path]:
    files = [ROOT / "pyproject.toml", ROOT / "README.md", ROOT / "requirements.txt"]
    files += sorted(p for p in (ROOT / "kb").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return files


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel .` from a copy of the sources (setuptools writes build/ next to them)."""
    src = tmp_path_factory.mktemp("src")
    for path in _wheel_inputs():
        target = src / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--disable-pip-version-check",
            "--no-deps",
            "-w",
            str(out),
            str(src),
        ],
        check=True,
    )
    (built,) = out.glob("chroma_kb-*.whl")
    return built


@pytest.fixture(scope="module")
def engine_venv(wheel) -> Path:
    """A fresh venv with `pip install <wheel>` (versions held to the lock with -c), cached across runs
    by the hash of the dependency declarations; the wheel itself is reinstalled every run."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + (ROOT / "requirements.txt").read_bytes())
    cache = Path(os.environ.get("CHROMA_KB_TEST_CACHE", Path.home() / ".cache" / "chroma_kb-tests"))
    venv = cache / f"engine-venv-{digest.hexdigest()[:16]}"
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if not (venv / ".complete").exists():
        subprocess.run([sys._base_executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([*pip, "-c", str(ROOT / "requirements.txt"), str(wheel)], check=True)
        (venv / ".complete").write_text("ok")
    else:
        subprocess.run([*pip, "--no-deps", "--force-reinstall", str(wheel)], check=True)
    return venv


@pytest.mark.slow
def test_the_wheel_holds_the_engine_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"kb"}
    assert "kb/resources/minilm-tokenizer.json" in names
    assert any(name.startswith("kb/resources/sample/") for name in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "chroma-kb = kb.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.slow
def test_pip_install_gives_a_working_chroma_kb_command(engine_venv, tmp_path):
    command = engine_venv / "bin" / "chroma-kb"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "leave.md").write_text("# 年假\n\n年假十天，未休完的可以顺延到次年三月底。\n", encoding="utf-8")
    (docs / "vpn.txt").write_text("To reset your VPN password, open the self-service portal.\n", encoding="utf-8")
    env = {**os.environ, "CHROMA_KB_DATA_DIR": str(tmp_path / "data")}
    outside = {"cwd": tmp_path, "env": env, "capture_output": True, "text": True, "timeout": 600}  # not the repo

    ingest = subprocess.run([str(command), "ingest", str(docs), "--kb", "手册", "--json"], **outside)
    assert ingest.returncode == 0, ingest.stderr
    assert json.loads(ingest.stdout)["documents"] == 2
    for query, doc_id in (("年假能顺延吗", "leave.md"), ("reset VPN password", "vpn.txt")):
        search = subprocess.run([str(command), "search", query, "--kb", "手册", "--json", "--top-k", "1"], **outside)
        assert search.returncode == 0, search.stderr
        assert [hit["doc_id"] for hit in json.loads(search.stdout)] == [doc_id]
    # The same CLI as `python -m kb`, from the installed package (not this checkout).
    same = subprocess.run([str(engine_venv / "bin" / "python"), "-m", "kb", "list", "--json"], **outside)
    assert same.returncode == 0 and "手册" in same.stdout
    where = subprocess.run([str(engine_venv / "bin" / "python"), "-c", "import kb; print(kb.__file__)"], **outside)
    assert str(engine_venv) in where.stdout
    bad = subprocess.run([str(command), "search", "x", "--kb", "nope"], **outside)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
