"""Builds `app`: pages, API routes and lifespan tasks. Nothing else."""

import reflex as rx

from fictures import api, browser_events, live, logs, pages, signals  # noqa: F401  (pages register themselves)
from fictures.analytics import service as analytics
from fictures.events import service

logs.configure()

app = rx.App(
    api_transformer=api.build(),
    stylesheets=["/styles.css"],
    backend_exception_handler=browser_events.on_handler_error,
    frontend_exception_handler=browser_events.on_frontend_error,
)
# Only page-wired events with well-typed arguments reach a handler.
browser_events.install(app)
# A tab that loads another page leaves the live rooms of the one it was on.
app.add_middleware(live.FollowNavigation())
# Order matters: the two lanes (durable events: Redis subscription and outbox
# relay; ephemeral signals) start before the tab hub that consumes them, and stop after it.
app.register_lifespan_task(service.lifespan)
app.register_lifespan_task(signals.lifespan)
app.register_lifespan_task(live.lifespan)
# Reads the tab hub's tabs and rooms: after it.
app.register_lifespan_task(analytics.lifespan)


@rx.page(route="/", on_load=rx.redirect("/community"))
def index() -> rx.Component:
    return rx.fragment()
