"""One typed settings object: the only reader of the environment.

Every setting can be given as an environment variable (``FICTURES_<NAME>``), and
the two production connection strings also under their usual names
``DATABASE_URL`` and ``REDIS_URL``.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GENRES: tuple[str, ...] = (
    "fantasy",
    "science-fiction",
    "mystery",
    "romance",
    "horror",
    "thriller",
    "literary",
    "historical",
    "young-adult",
    "other",
)



def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FICTURES_", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    database_url: str = Field(
        "sqlite:///fictures.db",
        validation_alias=AliasChoices("DATABASE_URL", "FICTURES_DATABASE_URL"),
    )
    # Empty means: start an embedded Valkey server for this app run.
    redis_url: str = Field(
        "", validation_alias=AliasChoices("REDIS_URL", "FICTURES_REDIS_URL")
    )
    # Backend worker processes. With more than one, Reflex keeps tab state in
    # Redis so any worker can serve any tab.
    workers: int = Field(1, ge=1, le=64)
    # The address browsers use, e.g. the load balancer's "https://fictures.example"
    # (empty: the instance's own address).
    public_url: str = ""
    # Where Reflex keeps each tab's state: "redis" lets a tab reconnect to any
    # process and keep it; empty: redis with several workers or in production,
    # otherwise in this process's memory.
    tab_state: Literal["", "memory", "redis"] = ""
    # Serve the frontend the release step built (`scripts/dev.py migrate`)
    # instead of building it at start; `scripts/dev.py serve` sets it when that
    # build is current for FICTURES_PUBLIC_URL.
    prebuilt_frontend: bool = False
    # Concurrent connections (websocket tabs + SSE streams + requests) per worker.
    max_connections: int = Field(20_000, ge=128)
    # On SIGTERM a worker closes its streams and tabs, flushes its outbox and
    # exits; one still running this long after the signal is killed. Keep it
    # under the service manager's stop timeout (deploy/README.md).
    stop_seconds: int = Field(8, ge=2, le=60)
    # Database connections each worker keeps open (and may open beyond that
    # while busy). SQLAlchemy's default of 5 (+10) made a reconnect storm (500
    # tabs reloading on one instance) open and close connections by the hundred.
    # Mind PostgreSQL's max_connections: instances x workers x (both).
    db_pool_size: int = Field(10, ge=1, le=200)
    db_max_overflow: int = Field(5, ge=0, le=200)
    port: int = Field(3000, ge=1, le=65535)
    token_ttl_hours: int = Field(24 * 14, ge=1)

    # Events
    stream_key: str = "fictures:events"
    stream_maxlen: int = Field(10_000, ge=100)
    redis_backoff_initial: float = Field(0.1, gt=0)
    redis_backoff_max: float = Field(5.0, gt=0)
    outbox_sweep_seconds: float = Field(2.0, gt=0)

    # Browser pages
    poll_seconds: int = Field(15, ge=1)
    # A visit to /community lasts at most this long: the next page load after
    # it (or after a new login) begins a new visit, and stories published since
    # the previous one began are "new since your last visit".
    visit_minutes: int = Field(60, ge=1)

    # Engine.IO pings every tab's websocket this often (Reflex's default is 25 s).
    # Presence counts a tab whose socket leaves a ping unanswered as gone, so a
    # silently dropped connection leaves the count within about two intervals.
    socket_ping_seconds: float = Field(5.0, gt=0, le=60)

    # Presence (who is reading) and the typing indicator: the ephemeral lane
    # (fictures.presence, fictures.typing_indicator).
    # Each process refreshes its readers in Redis and sweeps expired ones this often...
    presence_heartbeat_seconds: float = Field(2.5, gt=0)
    # ... and a reader not refreshed for this long (its worker died) is dropped.
    presence_ttl_seconds: float = Field(10.0, gt=0)
    # Names sent with each presence update (the count is always exact).
    presence_max_names: int = Field(50, ge=0, le=1000)
    # A typer's browser reports typing at most this often...
    typing_throttle_seconds: float = Field(2.0, gt=0)
    # ... and "<name> is writing a post…" stays this long after the last report.
    typing_hold_seconds: float = Field(5.0, gt=0)

    # Hostile clients
    # Origins (besides the app's own) whose pages may call the API and open a
    # websocket, comma-separated: "https://a.example,https://b.example".
    cors_origins: str = ""
    # Addresses or networks of reverse proxies whose X-Forwarded-For is
    # believed, comma-separated ("127.0.0.1,10.0.0.0/8"). None by default: the
    # peer address is the client's.
    trusted_proxies: str = ""
    # Request bodies above this answer 413 before they are read.
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    # Rate limits (the `limits` library's notation), counted in Redis across
    # every worker and instance.
    login_limit_per_account: str = "10/minute"
    login_limit_per_address: str = "30/minute"
    register_limit_per_address: str = "10/hour"
    post_limit_per_user: str = "20/minute"
    # New anonymous reads ("Read by N") counted per client address: each
    # browser id is a reader, and a client can mint ids without end.
    read_limit_per_address: str = "300/hour"
    # /api/metrics needs `Authorization: Bearer <this>`; empty: only loopback
    # clients (a scraper on the same host) may read it.
    metrics_token: str = ""

    # Logs: "text" or "json" (one object per line), the level of the app's
    # loggers, and the name this instance gives itself in them.
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    instance: str = Field(default_factory=socket.gethostname, max_length=64)
    # Tab connect/leave lines are INFO up to this many tabs in a process, DEBUG above.
    tab_log_threshold: int = Field(100, ge=0)

    # /api/health/ready answers 503 above this many unsent outbox rows.
    ready_max_backlog: int = Field(1000, ge=1)

    # Notifications and Web Push
    # The VAPID private key that signs pushes (PEM, or the raw key in base64url).
    # Empty: in development and tests a key is generated once and kept in
    # `vapid_key_file`; in production Web Push is off until it is set.
    vapid_private_key: str = ""
    vapid_key_file: str = "fictures-vapid.pem"
    # Who push services contact about this sender (a mailto: or https: URL).
    vapid_subject: str = "mailto:admin@localhost"
    # Push services a subscription's endpoint may point at: origin patterns
    # (fnmatch), comma-separated. The server POSTs to these URLs, so no other
    # address (an internal service) is ever accepted.
    push_services: str = (
        "https://fcm.googleapis.com,https://updates.push.services.mozilla.com,"
        "https://*.notify.windows.com,https://web.push.apple.com"
    )
    # Attempts per push and subscription for transient failures (429, 5xx,
    # network), with exponential backoff from `push_backoff_initial` seconds.
    push_attempts: int = Field(5, ge=1, le=20)
    push_backoff_initial: float = Field(1.0, gt=0)
    push_backoff_max: float = Field(60.0, gt=0)
    # How long a push service keeps a push for a browser that is offline.
    push_ttl_seconds: int = Field(86_400, ge=0)
    push_subscribe_limit_per_user: str = "20/hour"

    # Delivery analytics (fictures.analytics): how often each process sends its
    # share of the delivery records to Redis (and refreshes /admin while an admin
    # watches), how long records are kept, and at most how many.
    analytics_seconds: float = Field(2.0, gt=0, le=60)
    analytics_ttl_seconds: int = Field(86_400, ge=60)
    analytics_max_events: int = Field(10_000, ge=10)

    # SSE
    sse_ping_seconds: float = Field(30.0, gt=0)
    sse_max_per_ip: int = Field(20, ge=1)
    sse_queue_size: int = Field(1000, ge=1)
    # A stream whose client accepts no data for this long is closed.
    sse_send_timeout: float = Field(30.0, gt=0)

    @field_validator("database_url")
    @classmethod
    def _pin_postgres_driver(cls, v: str) -> str:
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which is not
        # installed; requirements.txt pins psycopg2.
        for prefix in ("postgresql://", "postgres://"):
            if v.startswith(prefix):
                return "postgresql+psycopg2://" + v[len(prefix):]
        return v

    @field_validator(
        "login_limit_per_account", "login_limit_per_address", "register_limit_per_address",
        "post_limit_per_user", "read_limit_per_address", "push_subscribe_limit_per_user",
    )
    @classmethod
    def _rate(cls, v: str) -> str:
        from limits import parse

        parse(v)  # raises ValueError on a malformed limit
        return v

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: str) -> str:
        for item in _split(v):
            ip_network(item, strict=False)  # raises ValueError on a malformed address
        return v

    @field_validator("vapid_subject")
    @classmethod
    def _subject(cls, v: str) -> str:
        if not v.startswith(("mailto:", "https://")):
            raise ValueError("must be a mailto: or https: URL")
        return v

    @property
    def push_service_patterns(self) -> list[str]:
        return [item.rstrip("/").lower() for item in _split(self.push_services)]

    @property
    def shared_tab_state(self) -> bool:
        if self.tab_state:
            return self.tab_state == "redis"
        return self.workers > 1 or self.env == "production"

    @field_validator("public_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @property
    def cors_origin_list(self) -> list[str]:
        return _split(self.cors_origins)

    @property
    def trusted_proxy_networks(self) -> list[IPv4Network | IPv6Network]:
        return [ip_network(item, strict=False) for item in _split(self.trusted_proxies)]

    @model_validator(mode="after")
    def _presence_timing(self) -> Settings:
        if self.presence_ttl_seconds < 2 * self.presence_heartbeat_seconds:
            raise ValueError(
                "FICTURES_PRESENCE_TTL_SECONDS must be at least twice FICTURES_PRESENCE_HEARTBEAT_SECONDS "
                "(a reader is refreshed at least once before it expires)"
            )
        return self

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.env == "production" and self.database_url.startswith("sqlite"):
            raise ValueError("DATABASE_URL must point at PostgreSQL in production")
        if self.env == "production" and not self.redis_url:
            raise ValueError("REDIS_URL must be set in production (no embedded server)")
        return self


settings = Settings()


def redis_url() -> str:
    """The Redis URL for the event bus: the configured one, or the embedded server's."""
    from fictures.embedded_redis import ensure_redis_url

    return ensure_redis_url(settings.redis_url)
