"""scripts/dev.py: an instance serves the release step's frontend build only while
it was built for the same public URL from the same sources and locked versions."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _dev_script():
    spec = importlib.util.spec_from_file_location("fictures_dev_script", ROOT / "scripts" / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_release_build_serves_only_while_it_matches(tmp_path, monkeypatch):
    dev = _dev_script()
    checkout = tmp_path / "checkout"
    for folder in ("fictures", "assets"):
        shutil.copytree(ROOT / folder, checkout / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("rxconfig.py", "requirements.txt"):
        shutil.copy(ROOT / name, checkout / name)
    monkeypatch.setattr(dev, "ROOT", checkout)
    monkeypatch.setattr(dev, "PRODUCTION_LOCK", checkout / "requirements.txt")
    monkeypatch.setattr(dev, "RELEASE_STAMP", checkout / "stamp")
    url = "https://fictures.example"

    assert not dev._prebuilt_frontend({"FICTURES_PUBLIC_URL": url}), "no build yet"
    (checkout / "stamp").write_text(dev._release_stamp(url))
    assert dev._prebuilt_frontend({"FICTURES_PUBLIC_URL": url})
    assert dev._prebuilt_frontend({"FICTURES_PUBLIC_URL": url + "/"})
    assert not dev._prebuilt_frontend({"FICTURES_PUBLIC_URL": "https://elsewhere.example"})
    # Without a public URL the build points at one instance's own port: each builds its own.
    assert not dev._prebuilt_frontend({})
    # A page changed (a new release without the release step): built again at start.
    page = checkout / "fictures" / "pages" / "community.py"
    page.write_text(page.read_text() + "\n# changed\n")
    assert not dev._prebuilt_frontend({"FICTURES_PUBLIC_URL": url})
    (checkout / "stamp").write_text(dev._release_stamp(url))
    # ... and so does a new locked version.
    lock = checkout / "requirements.txt"
    lock.write_text(lock.read_text() + "\n# relocked\n")
    assert not dev._prebuilt_frontend({"FICTURES_PUBLIC_URL": url})
