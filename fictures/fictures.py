"""Builds `app`: pages, API routes and lifespan tasks. Nothing else."""

import logging

import reflex as rx

from fictures import api, browser_events, live, pages  # noqa: F401  (pages register themselves)
from fictures.events import service

logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")
logging.getLogger("fictures").setLevel(logging.INFO)

app = rx.App(
    api_transformer=api.build(),
    stylesheets=["/styles.css"],
    backend_exception_handler=browser_events.on_handler_error,
)
# Only page-wired events with well-typed arguments reach a handler.
browser_events.install(app)
# Order matters: the event service (Redis subscription, outbox relay) starts
# before the tab hub that consumes it, and stops after it.
app.register_lifespan_task(service.lifespan)
app.register_lifespan_task(live.lifespan)


@rx.page(route="/", on_load=rx.redirect("/community"))
def index() -> rx.Component:
    return rx.fragment()
