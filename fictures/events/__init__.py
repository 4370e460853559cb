"""Community events: their schema, the outbox relay, the Redis bus, and the fan-out.

One event's path: a domain function (fictures.stories / fictures.posts) writes
the change and an OutboxEvent row in one transaction -> outbox.relay sends the
row to Redis (stream + PUBLISH, atomically) -> fanout.Fanout, one subscription
per process, hands it to every local subscriber (SSE streams, live tabs).
"""
