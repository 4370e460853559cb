"""Builds `app`: pages, API routes, lifespan tasks, and the fast paths in front (fictures.fast_paths). Nothing else."""

import reflex as rx

from fictures import (  # noqa: F401  (pages register themselves)
    api,
    browser_events,
    fast_paths,
    live,
    live_receipts,
    liveness,
    logs,
    pages,
    presence,
    push,
    reflex_compat,
    shutdown,
    signals,
    typing_indicator,
)
from fictures.analytics import service as analytics
from fictures.events import service
from fictures.settings import settings


class App(rx.App):
    """Reflex's app, with the event stream served ahead of its middleware
    (fictures.fast_paths: an open stream keeps every layer it passed alive)."""

    def __call__(self):
        return fast_paths.ahead_of(super().__call__())


logs.configure()
if settings.prebuilt_frontend:
    # Before the app's ASGI app is built: pages come from the release step's build.
    reflex_compat.serve_built_frontend()

app = App(
    api_transformer=api.build(),
    stylesheets=["/styles.css"],
    # System notifications and Web Push in the browser (the bell and account menu call it).
    head_components=[rx.script(src="/notify.js")],
    backend_exception_handler=browser_events.on_handler_error,
    frontend_exception_handler=browser_events.on_frontend_error,
)
# Only page-wired events with well-typed arguments reach a handler.
browser_events.install(app)
# A tab that loads another page leaves the live rooms of the one it was on.
app.add_middleware(live.FollowNavigation())
# Frequent pings: presence notices a connection that died silently within seconds.
reflex_compat.set_ping_interval(app, settings.socket_ping_seconds)
# SIGTERM: close streams and tabs, flush the outbox, exit (fictures/shutdown.py).
shutdown.install()
# Order matters: shutdown's lifespan stops last (the process's final words). Then
# liveness, before any other task of ours: tabs whose process died keep their
# token and state. The two lanes (durable events: Redis subscription and outbox
# relay; ephemeral signals) start before the tab hub that consumes them, and stop
# after it; presence and typing follow the hub's tabs, so they start after it.
app.register_lifespan_task(shutdown.lifespan)
app.register_lifespan_task(liveness.lifespan)
app.register_lifespan_task(service.lifespan)
app.register_lifespan_task(signals.lifespan)
app.register_lifespan_task(live.lifespan)
# Read counts and seen stories follow the signals into the hub's rooms and tabs.
app.register_lifespan_task(live_receipts.lifespan)
# Web Push to users with no open tab (one consumer group across every process).
app.register_lifespan_task(push.lifespan)
app.register_lifespan_task(presence.lifespan)
app.register_lifespan_task(typing_indicator.lifespan)
# Reads the tab hub's tabs and rooms: after it.
app.register_lifespan_task(analytics.lifespan)


@rx.page(route="/", on_load=rx.redirect("/community"))
def index() -> rx.Component:
    return rx.fragment()
