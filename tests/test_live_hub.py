"""The tab hub while tab state in Redis is out of reach (a Redis restart in production)."""

from __future__ import annotations

import logging
import types

import redis.exceptions

from fictures import live, reflex_compat


async def test_a_redis_restart_is_one_warning_not_an_error_per_tab(monkeypatch, caplog):
    hub = live.TabHub(types.SimpleNamespace())  # type: ignore[arg-type]
    reachable = False

    async def run_in_tab(app, token, state_cls, apply, router_data):
        if not reachable:
            raise redis.exceptions.BusyLoadingError("Valkey is loading the dataset in memory")

    monkeypatch.setattr(reflex_compat, "run_in_tab", run_in_tab)
    caplog.set_level(logging.INFO, logger="fictures.live")
    for token in ("tab-one-1234", "tab-two-5678", "tab-three-90"):
        await hub._run_in_tab(token, live.LiveState, lambda state: None, None, previous=None, event=None)
    reachable = True
    await hub._run_in_tab("tab-one-1234", live.LiveState, lambda state: None, None, previous=None, event=None)
    records = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "fictures.live"]
    assert [level for level, _ in records] == ["WARNING", "INFO"], records
    assert "unreachable" in records[0][1] and "reachable again" in records[1][1]


async def test_a_stopping_hub_tells_its_tabs_nothing_about_its_own_subscription_ending(monkeypatch):
    """Shutting down, the event service's subscription ends after the hub stopped:
    no status change may reach the tabs then (it would take each tab's state lock
    in Redis, and a lock an exiting process holds delays the tab's hydrate elsewhere)."""
    hub = live.TabHub(types.SimpleNamespace())  # type: ignore[arg-type]
    told: list[bool] = []
    monkeypatch.setattr(hub, "_broadcast_status", told.append)
    hub.fanout.on_health_change(hub._broadcast_status)
    hub.fanout._set_health(not hub.fanout.healthy)
    assert len(told) == 1
    await hub.stop()
    hub.fanout._set_health(not hub.fanout.healthy)
    assert len(told) == 1
