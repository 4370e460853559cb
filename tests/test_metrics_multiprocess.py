"""Several workers, one scrape: fictures.metrics in prometheus-client's multiprocess
mode (PROMETHEUS_MULTIPROC_DIR, as `scripts/dev.py serve` sets it).

The mode is chosen when prometheus-client is imported, so this runs in a fresh
interpreter that forks two "workers" as Granian does. (tests/e2e/test_metrics_workers.py
checks the same through the real server; tests/api/test_metrics_api.py the single
process.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, multiprocessing, os, signal, sys
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
    from prometheus_client.parser import text_string_to_metric_families
    from fictures import metrics
    from fictures.analytics.tally import tally
    from fictures.events.schema import StoryPublished

    def worker(n, stop_cleanly, ready, go):
        metrics.SSE_CLIENTS.inc(n)
        metrics.EVENTS_PUBLISHED.labels("story:published").inc(n)
        async def count_tasks():
            metrics.count_tasks()
        asyncio.run(count_tasks())
        tally().delivered(StoryPublished(id=n, story_id=1, title="T", author_id=1), "sse", 10 * n)
        tally().take()  # the analytics tick
        ready.set()
        go.wait(60)
        if stop_cleanly:
            metrics.forget_this_process()  # what fictures.shutdown does last
        else:
            signal.pause()  # until killed

    def scrape():
        async def render():
            return metrics.render().decode()
        values = {}
        for family in text_string_to_metric_families(asyncio.run(render())):
            for s in family.samples:
                if s.name == "fictures_sse_clients":
                    values["streams"] = s.value
                elif s.name == "fictures_events_published_total":
                    values["published"] = s.value
                elif s.name == "fictures_events_delivered_total" and s.labels["client"] == "sse":
                    values["delivered"] = s.value
                elif s.name == "fictures_delivery_latency_seconds_count" and s.labels["client"] == "sse":
                    values["latencies"] = s.value
                elif s.name == "fictures_asyncio_tasks":
                    values.setdefault("task_pids", []).append(int(s.labels["pid"]))
        return values

    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    workers = []
    for n, clean in ((1, True), (2, False)):
        ready = ctx.Event()
        proc = ctx.Process(target=worker, args=(n, clean, ready, go))
        proc.start()
        assert ready.wait(60)
        workers.append(proc)
    pids = [p.pid for p in workers]
    scrapes = {"both": scrape()}
    go.set()
    workers[0].join(60)
    scrapes["one stopped"] = scrape()
    os.kill(pids[1], signal.SIGKILL)
    workers[1].join(60)
    scrapes["one killed too"] = scrape()
    print(json.dumps({"pids": pids, "scrapes": scrapes}))
    """
)


def test_one_scrape_sums_the_workers_and_forgets_the_live_values_of_stopped_ones(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    pids, scrapes = result["pids"], result["scrapes"]
    both, one_stopped, killed = scrapes["both"], scrapes["one stopped"], scrapes["one killed too"]
    # Summed over both workers: 1 + 2 streams, events, and 10 + 20 deliveries (a custom
    # collector's totals, written as multiprocess values).
    assert (both["streams"], both["published"], both["delivered"], both["latencies"]) == (3, 3, 30, 30)
    assert set(pids) <= set(both["task_pids"])  # per worker, labelled with its pid
    # A stopped worker's streams stop counting; what it counted stays.
    assert (one_stopped["streams"], one_stopped["published"], one_stopped["delivered"]) == (2, 3, 30)
    assert pids[0] not in one_stopped["task_pids"]
    # So for one that was killed (noticed at the next scrape).
    assert (killed["streams"], killed["published"], killed["delivered"]) == (0, 3, 30)
    assert pids[1] not in killed["task_pids"]
