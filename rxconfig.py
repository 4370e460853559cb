import os

import reflex as rx

from fictures.server_limits import bound_worker_stop, http1_only, raise_connection_limits
from fictures.settings import redis_url, settings

# Started here, in the `reflex` command's own process, so the embedded server
# (when no REDIS_URL is set) exists once per app run and every worker reuses it.
_redis_url = redis_url()
raise_connection_limits(settings.max_connections)
http1_only()
bound_worker_stop(settings.stop_seconds)

_shared = settings.shared_tab_state
# Read by Reflex when it creates the engine (rx.session()).
os.environ.setdefault("SQLALCHEMY_POOL_SIZE", str(settings.db_pool_size))
os.environ.setdefault("SQLALCHEMY_MAX_OVERFLOW", str(settings.db_max_overflow))

config = rx.Config(
    app_name="fictures",
    db_url=settings.database_url,
    # Tab state in Redis whenever a tab may reconnect to another process (several
    # workers, or production behind a load balancer): it keeps its state, an
    # author's unsaved editor text included. Otherwise in memory: a Redis outage
    # then only degrades live updates, and Reflex's disk store (which pickled every
    # tab's state after each event, benchmarks/RESULTS.md) is never used.
    redis_url=_redis_url if _shared else None,
    state_manager_mode="redis" if _shared else "memory",
    # The address browsers use (the load balancer): pages built by any instance
    # connect back through it.
    **({"api_url": settings.public_url, "deploy_url": settings.public_url} if settings.public_url else {}),
    # Cross-origin API calls only from the configured origins (none by default);
    # the websocket's origin check is in fictures.browser_events.
    cors_allowed_origins=settings.cors_origin_list,
    show_built_with_reflex=False,
    telemetry_enabled=False,
    plugins=[
        rx.plugins.SitemapPlugin(),
        rx.plugins.RadixThemesPlugin(theme=rx.theme(accent_color="iris", radius="medium")),
    ],
)
