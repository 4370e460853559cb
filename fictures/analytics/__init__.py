"""Delivery analytics: how fast and how widely each event reached its readers.

- `tally`: each process's tally of deliveries (the only part on the hot path:
  a few list increments per delivery point), and the Prometheus metrics read
  from it at scrape time.
- `records`: per-event delivery records in Redis for the last 24 h, to which
  every process adds its share (readers per kind, latency bucket counts), and
  per-minute aggregates (events per channel, latency, readers connected).
- `service`: the process's periodic task (sends its share, samples its
  readers, and refreshes the /admin page's room while an admin watches).

Delivery points call `analytics.delivered(event, kind, count)`.
"""

from fictures.analytics.tally import KINDS, delivered

__all__ = ["KINDS", "delivered"]
