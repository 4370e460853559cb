import reflex as rx

from fictures.server_limits import raise_connection_limits
from fictures.settings import redis_url, settings

# Started here, in the `reflex` command's own process, so the embedded server
# (when no REDIS_URL is set) exists once per app run and every worker reuses it.
_redis_url = redis_url()
raise_connection_limits(settings.max_connections)

config = rx.Config(
    app_name="fictures",
    db_url=settings.database_url,
    # One worker keeps Reflex's tab state in-process: a Redis outage then only
    # degrades live updates. Several workers share tab state through the same Redis.
    redis_url=_redis_url if settings.workers > 1 else None,
    # In memory, not Reflex's default disk store: it pickled every tab's state
    # after each event and rescanned the folder (most of a broadcast's CPU in
    # benchmarks/RESULTS.md). Tabs rehydrate from the DB after a restart.
    state_manager_mode="redis" if settings.workers > 1 else "memory",
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
