"""scripts/screenshots.py keeps working against the running app (the README's
screenshots come from it): both shots are taken, with the live arrivals shown."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import AppServer

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "screenshots.py"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_the_screenshot_script_drives_the_app(app_server: AppServer, tmp_path: Path):
    author, _ = app_server.register(password="shots-password")
    writer, _ = app_server.register(password="shots-password")
    # A process of its own: the suite's browser already holds Playwright's sync API here.
    done = subprocess.run(
        [sys.executable, str(SCRIPT), app_server.url, "--out", str(tmp_path), "--author", author,
         "--writer", writer, "--password", "shots-password"],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("community.png", "writing.png"):
        assert _png_size(tmp_path / name) == (1280, 900)
