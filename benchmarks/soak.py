"""Soak: nginx in front of two instances for minutes, under load, through faults.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--tabs 1000] [--streams 200]
        [--rate 20] [--restart-at MIN] [--redis-restart-at MIN] [--label soak]

The deployment is the one deploy/ describes, built by tests/cluster.py: nginx
(deploy/nginx.conf) in front of instances A and B (`scripts/dev.py serve`,
--workers workers each, production mode, in network namespaces of their own
when run as root), PostgreSQL (--database-url; a schema of the run's own) and
a dedicated Valkey on its own port with an append-only file (so a restart is
an outage, not amnesia). Through nginx:

- --tabs simulated /community tabs and --streams SSE streams
  (benchmarks/_soak_clients.py, a process of their own), reconnecting as
  browsers do (a tab keeps its token; a stream resumes with Last-Event-ID);
- --rate stories per second published through the REST API;
- at --restart-at minutes (default 40 % of the run) instance A is stopped
  with SIGTERM and started again; at --redis-restart-at (default 70 %) Redis is.

It reports, per reader kind: events lost (published while the reader existed
and never received; for tabs also "while live": published while the tab was
live and still live 5 s later) and duplicated (a stream: an event id twice; a
tab: an arrival broadcast again, shown once by the page), the
p50/p99 delivery latency (publish request sent -> first arrival) per 30 s
window of publication, how long each kind took to be live again after each
fault and to get the first event published after it, and RSS and established
TCP connections per process over time (a PNG next to RESULTS.md). It writes a
section of benchmarks/RESULTS.md (--label; --no-write to only print). Figures,
not pass/fail. The default run takes about 14 minutes on 2 cores; the short
one in RESULTS.md: `--minutes 2 --tabs 200 --streams 50 --label soak-short`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import httpx  # noqa: E402
from _server import raise_fd_limit  # noqa: E402
from fanout import log, write_results  # noqa: E402

from tests.cluster import Cluster, cluster  # noqa: E402

ROOT = HERE.parent


# -- the simulated readers' process ------------------------------------------------


class Clients:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lock = asyncio.Lock()

    @classmethod
    async def start(cls, port: int, prefix: str, log_path: Path) -> Clients:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "_soak_clients.py"), "127.0.0.1", str(port), prefix,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=log_path.open("wb"), limit=1 << 26,
        )
        return cls(proc)

    async def call(self, cmd: str, **args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        async with self.lock:
            self.proc.stdin.write(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            await self.proc.stdin.drain()
            answer = json.loads(await self.proc.stdout.readline())
        if not answer["ok"]:
            raise RuntimeError(f"clients: {cmd}: {answer['error']}")
        return answer["result"]

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.call("quit"), 10)
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


def connect_packet() -> tuple[str, str]:
    """The hydrate event a browser sends on /community, from the built frontend."""
    from reflex import constants

    ctx = (ROOT / ".web" / "utils" / "context.jsx").read_text()
    state_name = re.search(r'export const state_name = "([^"]+)"', ctx).group(1)  # type: ignore[union-attr]
    schema = re.search(r'export const stateSchema = "([^"]+)"', ctx).group(1)  # type: ignore[union-attr]
    hashes = json.loads(re.search(r"export const initialStateHashes = (\[[^\]]*\])", ctx).group(1))  # type: ignore[union-attr]
    event = {"name": f"{state_name}.hydrate_and_load", "payload": {"hashes": hashes},
             "router_data": {"pathname": "/community/", "asPath": "/community/"}}
    packet = "40/_event," + json.dumps({"event": event, "state_schema": schema}, separators=(",", ":"))
    return packet, constants.Reflex.VERSION


# -- processes: RSS and established connections --------------------------------------


def established(pid: int) -> int:
    """Established TCP connections of a process (read in its own network namespace)."""
    try:
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        count = 0
        for table in ("tcp", "tcp6"):
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    count += parts[3] == "01" and parts[9] in inodes
        return count
    except (OSError, StopIteration):
        return 0


def processes(c: Cluster, clients_pid: int) -> dict[str, list[int]]:
    """label -> pids: each instance's dev.py, reflex main and workers; nginx; Redis; clients."""
    import psutil

    found: dict[str, list[int]] = {}
    for name, instance in c.instances.items():
        procs = instance.processes()
        if not procs:
            continue
        found[f"{name}:dev.py"] = [procs[0].pid]
        with contextlib.suppress(psutil.NoSuchProcess):
            for main in procs[0].children():
                found[f"{name}:main"] = [main.pid]
                for i, worker in enumerate(sorted(main.children(), key=lambda p: p.pid), 1):
                    found[f"{name}:w{i}"] = [worker.pid]
    if c.nginx.process is not None:
        with contextlib.suppress(psutil.NoSuchProcess):
            master = psutil.Process(c.nginx.process.pid)
            found["nginx"] = [master.pid, *(p.pid for p in master.children())]
    if c.redis.process is not None and c.redis.process.poll() is None:
        found["redis"] = [c.redis.process.pid]
    found["clients"] = [clients_pid]
    return found


def sample(c: Cluster, clients_pid: int) -> dict[str, tuple[float, int]]:
    """label -> (RSS MB, established connections)."""
    import psutil

    out = {}
    for label, pids in processes(c, clients_pid).items():
        rss = 0
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                rss += psutil.Process(pid).memory_info().rss
        out[label] = (rss / 2**20, sum(established(pid) for pid in pids))
    return out


# -- the run -------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace, c: Cluster) -> None:
        self.args, self.c = args, c
        self.run_id = uuid.uuid4().hex[:6]
        self.prefix = f"soak-{self.run_id}-"
        self.http = httpx.AsyncClient(base_url=c.url, timeout=10,
                                      limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))
        self.token = ""
        self.published: list[list[float]] = []
        self.failed: list[int] = []
        self.publish_errors: dict[str, int] = {}
        self.faults: list[list[Any]] = []
        self.fault_notes: list[str] = []
        self.samples: list[tuple[float, dict[str, tuple[float, int]]]] = []
        self.clients: Clients | None = None
        self.t0_ms = time.time() * 1000
        self.published_seconds = self.drain_seconds = 0.0

    async def register(self) -> None:
        name, pw = f"soak_{self.run_id}", "password123"
        (await self.http.post("/api/auth/register", json={"username": name, "password": pw})).raise_for_status()
        r = await self.http.post("/api/auth/token", json={"username": name, "password": pw})
        r.raise_for_status()
        self.token = r.json()["token"]

    async def publish(self, k: int) -> None:
        sent = int(time.time() * 1000)
        try:
            r = await self.http.post("/api/stories", headers={"Authorization": f"Bearer {self.token}"},
                                     json={"title": f"{self.prefix}{k}-{sent}", "status": "published"})
            ok, why = r.status_code == 201, f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            ok, why = False, type(exc).__name__
        if ok:
            self.published.append([k, sent])
        else:
            self.failed.append(k)
            self.publish_errors[why] = self.publish_errors.get(why, 0) + 1

    async def publisher(self, seconds: float) -> None:
        total = int(seconds * self.args.rate)
        start = time.monotonic()
        tasks = set()
        for k in range(total):
            delay = start + k / self.args.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.publish(k))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def sampler(self, clients_pid: int) -> None:
        while True:
            self.samples.append((time.time() * 1000, await asyncio.to_thread(sample, self.c, clients_pid)))
            await asyncio.sleep(self.args.sample_seconds)

    async def fault(self, at_s: float, name: str, action) -> None:
        await asyncio.sleep(max(0.0, at_s))
        self.faults.append([name, time.time() * 1000])
        log(f"fault: {name}")
        note = await asyncio.to_thread(action)
        self.fault_notes.append(f"{name}: {note}")
        log(f"fault: {name}: {note}")

    def restart_instance(self) -> str:
        instance = self.c.instances["a"]
        stopped, killed = instance.stop(signal.SIGTERM)
        ready = instance.start()
        return f"stopped in {stopped:.1f} s ({killed} processes killed after the timeout), ready again {ready:.1f} s later"

    def restart_redis(self) -> str:
        started = time.monotonic()
        self.c.restart_redis()
        return f"down for {time.monotonic() - started:.2f} s (stopped with SIGTERM, its append-only file kept)"

    async def drain(self) -> None:
        """Wait until no reader got anything new for --settle seconds (at most --settle-max)."""
        assert self.clients is not None
        started = time.monotonic()
        last, still_since = None, time.monotonic()
        while time.monotonic() - started < self.args.settle_max:
            now = await self.clients.call("delivered")
            if now != last:
                last, still_since = now, time.monotonic()
            elif time.monotonic() - still_since >= self.args.settle:
                break
            await asyncio.sleep(1)
        self.drain_seconds = time.monotonic() - started
        log(f"published {len(self.published):,} in {self.published_seconds:.0f} s; deliveries settled "
            f"after {self.drain_seconds:.0f} s more: {last}")

    async def progress(self) -> None:
        while True:
            await asyncio.sleep(15)
            status = await self.clients.call("status") if self.clients else {}
            log(f"published {len(self.published):,} (failed {len(self.failed):,}); readers {status}")

    async def run(self) -> dict:
        seconds = self.args.minutes * 60
        packet, subprotocol = connect_packet()
        self.clients = await Clients.start(self.c.nginx.port, self.prefix, self.c.workdir / "clients.log")
        await self.clients.call("configure", connect_packet=packet, subprotocol=subprotocol,
                                origin=self.c.url, t0_ms=self.t0_ms)
        await self.register()
        for kind, n in (("streams", self.args.streams), ("tabs", self.args.tabs)):
            r = await self.clients.call("open", kind=kind, n=n, concurrency=50, timeout=60)
            log(f"{kind}: {r['ready']:,} of {n:,} ready in {r['seconds']:.1f} s")
        background = [asyncio.create_task(self.sampler(self.clients.proc.pid)),
                      asyncio.create_task(self.progress())]
        self.t0_ms = time.time() * 1000
        await self.clients.call("start", t0_ms=self.t0_ms)
        faults = [asyncio.create_task(self.fault(self.args.restart_at * 60, "instance A restarted",
                                                 self.restart_instance)),
                  asyncio.create_task(self.fault(self.args.redis_restart_at * 60, "Redis restarted",
                                                 self.restart_redis))]
        try:
            await self.publisher(seconds)
            await asyncio.gather(*faults)
            self.published_seconds = (time.time() * 1000 - self.t0_ms) / 1000
            await self.drain()
        finally:
            for task in background + faults:
                task.cancel()
        end_ms = max((ms for _, ms in self.published), default=time.time() * 1000)
        report = await self.clients.call("report", published=self.published, failed=self.failed,
                                         end_ms=end_ms, faults=self.faults)
        await self.clients.stop()
        await self.http.aclose()
        return report


# -- output --------------------------------------------------------------------------


def plot(soak: Soak, report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = soak.t0_ms
    fig, (rss_ax, conn_ax, lat_ax) = plt.subplots(3, 1, figsize=(12, 10), sharex=True)
    labels = sorted({label for _, s in soak.samples for label in s})
    for label in labels:
        points = [((t - t0) / 60000, s[label]) for t, s in soak.samples if label in s]
        xs = [x for x, _ in points]
        style = "--" if label in ("nginx", "redis", "clients") else "-"
        rss_ax.plot(xs, [v[0] for _, v in points], style, label=label, linewidth=1)
        conn_ax.plot(xs, [v[1] for _, v in points], style, label=label, linewidth=1)
    for kind, data in report["kinds"].items():
        windows = sorted(data["windows"].items(), key=lambda kv: int(kv[0]))
        xs = [(int(w) + 0.5) * 0.5 for w, _ in windows]
        lat_ax.plot(xs, [v["p50"] for _, v in windows], "o-", label=f"{kind} p50")
        lat_ax.plot(xs, [v["p99"] for _, v in windows], "s--", label=f"{kind} p99")
    for ax in (rss_ax, conn_ax, lat_ax):
        for name, at in soak.faults:
            ax.axvline((at - t0) / 60000, color="red", linestyle=":", linewidth=1)
            ax.text((at - t0) / 60000, 0.98, f" {name}", transform=ax.get_xaxis_transform(),
                    rotation=90, fontsize=7, color="red", va="top", ha="right")
        ax.grid(alpha=0.3)
    rss_ax.set_ylabel("RSS (MiB)")
    conn_ax.set_ylabel("established TCP")
    lat_ax.set_ylabel("delivery latency (ms)")
    lat_ax.set_yscale("log")
    lat_ax.set_xlabel("minutes since publishing began (latency: per 30 s window of publication)")
    rss_ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    lat_ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(f"soak: {soak.args.tabs} tabs + {soak.args.streams} SSE streams, "
                 f"{soak.args.rate} stories/s, {soak.args.minutes} min", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def _num(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:.2f}{unit}" if isinstance(value, float) else f"{value:,}{unit}"


def render(soak: Soak, report: dict, *, wall: float, load: tuple[float, float], png: str) -> str:
    args = soak.args
    hosts = {n: (h.address, "netns" if h.netns else "loopback") for n, h in soak.c.network.hosts.items()}
    lines = [
        f"## {args.label}",
        "",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; wall time {wall:.0f} s; "
        f"{os.cpu_count()} cores; {platform.platform()}",
        f"- command: `.venv/bin/python benchmarks/soak.py {' '.join(sys.argv[1:])}`",
        f"- load average (1 min) before / after: {load[0]:.1f} / {load[1]:.1f} (other work on the machine "
        "inflates latencies)",
        f"- topology: nginx -> instances {hosts}, {args.workers} workers each, production mode; "
        "PostgreSQL; a dedicated Valkey with an append-only file",
        f"- load: {args.tabs:,} tabs + {args.streams:,} SSE streams through nginx; {args.rate} stories/s "
        f"for {args.minutes} min: {len(soak.published):,} published (the last request answered after "
        f"{soak.published_seconds:.0f} s), {len(soak.failed):,} publish requests failed "
        f"{soak.publish_errors or ''}; deliveries settled {soak.drain_seconds:.0f} s after that",
        f"- faults: {'; '.join(soak.fault_notes) or 'none'}",
        "",
        "| readers | count | connects | lost (readers losing any) | lost while live | duplicated | SSE resets | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, d in report["kinds"].items():
        lines.append(f"| {kind} | {d['readers']:,} | {d['connects']:,} | {d['lost']:,} ({d['readers_losing']:,}) | "
                     f"{d['lost_while_live'] if kind == 'tabs' else '–'} | {d['duplicates']:,} | "
                     f"{d['resets'] if kind == 'streams' else '–'} | {d['errors'] or '–'} |")
    lines += ["", "Lost: reader × event pairs for events published while the reader existed (after it was "
              "first live, up to 5 s before the end) that it never received in any frame (a broadcast, "
              "the 20 slots of a hydrate, or its page's list: a reconnecting /community tab gets every "
              "story published since its page loaded, up to 1,000, in its list, NEW); "
              "\"while live\" counts only events published while the tab was live and "
              "still live 5 s later. Duplicated: for streams, an event id received twice (the stream's "
              "exactly-once promise); for tabs, an arrival broadcast to a tab that already had it "
              "broadcast (after a reconnect to a worker still behind the one it left): the page shows "
              "it once (its slot is set to the same card; a toast only for a newer id), so this counts "
              "wasted frames, not cards shown twice (tests/e2e/test_failover.py counts the cards); a "
              "reconnect's catch-up and the room's resync are not counted.", "",
              "Delivery latency, publish request sent -> first arrival (ms), by 30 s window of publication:", "",
              "| window | " + " | ".join(f"{k} deliveries | {k} lost | {k} p50 | {k} p99 | {k} max"
                                          for k in report["kinds"]) + " |",
              "|---|" + "---|---|---|---|---|" * len(report["kinds"])]
    windows = sorted({int(w) for d in report["kinds"].values() for w in d["windows"]})
    for w in windows:
        cells = []
        for d in report["kinds"].values():
            v = d["windows"].get(str(w)) or d["windows"].get(w)
            cells.append(" | ".join([f"{v['deliveries']:,}", f"{v.get('lost', 0):,}", str(v["p50"]),
                                     str(v["p99"]), str(v["max"])]) if v else "– | – | – | – | –")
        lines.append(f"| {w * 30}–{w * 30 + 30} s | " + " | ".join(cells) + " |")
    lines += ["", "Recovery after each fault (s since it began): readers that left Live (lost their "
              "connection, or Live turned off while the server's Redis subscription was down) and how "
              "long until Live again; and for every reader the first event published after the fault:", "",
              "| fault | readers | left Live | never back | back p50 / p99 / max | first event after p50 / max |",
              "|---|---|---|---|---|---|"]
    for kind, d in report["kinds"].items():
        for r in d["recovery"]:
            lines.append(f"| {r['fault']} | {kind} | {r['affected']:,} | {r['never_back']:,} | "
                         f"{_num(r['back_p50_s'])} / {_num(r['back_p99_s'])} / {_num(r['back_max_s'])} | "
                         f"{_num(r['first_event_after_p50_s'])} / {_num(r['first_event_after_max_s'])} |")
    peak: dict[str, tuple[float, int]] = {}
    for _, s in soak.samples:
        for label, (rss, conns) in s.items():
            old = peak.get(label, (0.0, 0))
            peak[label] = (max(old[0], rss), max(old[1], conns))
    lines += ["", f"RSS and established connections per process over time: [{png}]({png}). Peaks: "
              + "; ".join(f"{label} {rss:.0f} MiB / {conns:,}" for label, (rss, conns) in sorted(peak.items())),
              ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--tabs", type=int, default=1000)
    p.add_argument("--streams", type=int, default=200)
    p.add_argument("--rate", type=float, default=20.0, help="stories published per second")
    p.add_argument("--restart-at", type=float, help="minute at which instance A restarts (default 40%% of the run)")
    p.add_argument("--redis-restart-at", type=float, help="minute at which Redis restarts (default 70%%)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--database-url", default=os.environ.get(
        "FICTURES_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    p.add_argument("--settle", type=float, default=15.0,
                   help="after the last publish, wait until no reader got anything new for this long...")
    p.add_argument("--settle-max", type=float, default=300.0, help="... but no longer than this")
    p.add_argument("--keep-logs", type=Path, default=HERE / "profiles",
                   help="copy the instances' and nginx's logs to <this>/<label>/ (benchmarks/profiles is not committed)")
    p.add_argument("--sample-seconds", type=float, default=2.0)
    p.add_argument("--label", default="soak")
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = p.parse_args(argv)
    args.restart_at = args.minutes * 0.4 if args.restart_at is None else args.restart_at
    args.redis_restart_at = args.minutes * 0.7 if args.redis_restart_at is None else args.redis_restart_at
    return args


async def amain(args: argparse.Namespace) -> None:
    raise_fd_limit()
    load0 = os.getloadavg()[0]
    started = time.monotonic()
    env = {
        # Every simulated reader comes through nginx from 127.0.0.1.
        "FICTURES_SSE_MAX_PER_IP": "100000",
        "FICTURES_SSE_QUEUE_SIZE": "100000",
        "FICTURES_REGISTER_LIMIT_PER_ADDRESS": "1000/minute",
    }
    with cluster(postgres_url=args.database_url, workers=args.workers, env=env, persistent_redis=True) as c:
        log(f"release step {c.release_seconds:.0f} s; nginx at {c.url}; hosts "
            f"{ {n: h.address for n, h in c.network.hosts.items()} }")
        for instance in c.instances.values():
            instance.launch()
        for instance in c.instances.values():
            log(f"instance {instance.name} ready in {instance.wait_ready():.1f} s")
        soak = Soak(args, c)
        report = await soak.run()
        errors = {name: _error_summary(i.errors()) for name, i in c.instances.items() if i.errors()}
        keep = args.keep_logs / args.label
        keep.mkdir(parents=True, exist_ok=True)
        for instance in c.instances.values():
            shutil.copy(instance.log_path, keep / instance.log_path.name)
        (keep / "nginx-error.log").write_text(c.nginx.error_log())
        log(f"instance and nginx logs copied to {keep}")
        png_name = f"{args.label}.png"
        # --no-write leaves benchmarks/ alone: the plot goes with the logs.
        png_path = (args.keep_logs / args.label / png_name) if args.no_write else HERE / png_name
        png_path.parent.mkdir(parents=True, exist_ok=True)
        plot(soak, report, png_path)
        block = render(soak, report, wall=time.monotonic() - started, load=(load0, os.getloadavg()[0]),
                       png=png_name)
        if errors:
            block += f"\nError lines in the instances' logs (first ones): {errors}\n"
    print(block)
    if not args.no_write:
        write_results(args.label, block)
        log(f"wrote benchmarks/RESULTS.md (section '{args.label}') and benchmarks/{png_name}")


def _error_summary(lines: list[str]) -> dict[str, int]:
    """Error lines by message (a traceback's own lines not counted)."""
    counts: dict[str, int] = {}
    for line in lines:
        if "Traceback" in line:
            continue
        message = re.sub(r"^[\d-]+ [\d:,]+ \[\d+\] ", "", line)
        message = re.sub(r"\b[0-9a-f]{8}\b", "…", message)[:160]
        counts[message] = counts.get(message, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> None:
    asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    main()
