"""The declared install: pyproject.toml declares, the two locks pin every version.

`python3 scripts/dev.py lock` regenerates the locks; these checks catch a
declaration changed without relocking, and test tools leaking into production.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _lock(name: str) -> dict[str, str]:
    """{normalised package name: version} of a lock file; every line is pinned."""
    pins: dict[str, str] = {}
    for line in (ROOT / name).read_text().splitlines():
        if not line or line.startswith((" ", "#")):
            continue
        spec = line.split(";")[0].strip()
        assert "==" in spec, f"{name}: not pinned: {line!r}"
        package, version = spec.split("==")
        pins[_norm(package.split("[")[0])] = version
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(requirements: list[str]) -> dict[str, str]:
    out = {}
    for text in requirements:
        req = Requirement(text)
        (spec,) = req.specifier
        assert spec.operator == "==", f"pyproject.toml: pin {text!r} exactly"
        out[_norm(req.name)] = spec.version
    return out


RUNTIME = _declared(PYPROJECT["project"]["dependencies"])
EXTRAS = {
    extra: _declared(reqs) for extra, reqs in PYPROJECT["project"]["optional-dependencies"].items()
}


def test_the_production_lock_pins_what_pyproject_declares_and_no_test_tool():
    lock = _lock("requirements.txt")
    for package, version in RUNTIME.items():
        assert lock.get(package) == version, f"requirements.txt: {package} is not {version}"
    for tool in ("pytest", "playwright", "hypothesis", "ruff", "uv", "pytest-asyncio"):
        assert tool not in lock, f"the production lock installs the test tool {tool}"


def test_the_development_lock_holds_the_production_one_and_the_extras():
    production, development = _lock("requirements.txt"), _lock("requirements-dev.txt")
    for package, version in production.items():
        assert development.get(package) == version, (
            f"{package}: {version} in requirements.txt but {development.get(package)} in "
            "requirements-dev.txt (run python3 scripts/dev.py lock)"
        )
    for extra in ("test", "dev"):
        for package, version in EXTRAS[extra].items():
            assert development.get(package) == version, f"requirements-dev.txt: {package}"


def test_python_and_layout_declared():
    project = PYPROJECT["project"]
    assert project["name"] == "fictures"
    assert project["requires-python"] == ">=3.11"
