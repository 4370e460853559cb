"""No secret reaches a log line, whatever logger writes it."""

from __future__ import annotations

import io
import logging

import pytest

from fictures import logs

SECRETS = ["s3cr3t-pass", "tok_9f8e7d6c5b4a", "hunter2hunter2", "0123456789abcdef0123456789abcdef"]
TAB = "6f1c2a3b-1d2e-4f5a-8b9c-0d1e2f3a4b5c"


@pytest.fixture
def captured():
    logs.configure()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


def test_credentials_tokens_and_form_passwords_are_redacted(captured):
    log = logging.getLogger("reflex_base.event.processor.event_processor")
    log.warning("Event service started (Redis redis://default:%s@redis.internal:6379/0)", SECRETS[0])
    log.warning("GET /api/stories Authorization: Bearer %s", SECRETS[1])
    log.error(
        "Error processing event queue entry for Event(name='x.login', router_data={'token': %r, "
        "'headers': {'cookie': 'session=%s', 'authorization': 'Bearer %s'}}, payload={'form': "
        "{'__reflex_form_data__': [['username', 'ada'], ['password', %r]]}, "
        "'vars': {'s.auth_token_rx_state_': %r}})",
        TAB, SECRETS[3], SECRETS[1], SECRETS[2], SECRETS[3],
    )
    log.info('{"password": "%s", "username": "ada"}', SECRETS[2])
    log.info("ws /_event/?EIO=4&transport=websocket&token=%s", TAB)
    log.warning("Attempting to send delta to disconnected client %r", TAB)
    try:
        raise ValueError(f"bad login for password={SECRETS[2]} via postgresql://u:{SECRETS[0]}@db/x")
    except ValueError:
        log.exception("Unhandled error")
    text = captured.getvalue()
    for secret in [*SECRETS, TAB]:
        assert secret not in text, text
    assert "redis://default:***@redis.internal:6379/0" in text
    assert "'username', 'ada'" in text and "6f1c2a3b-…" in text
    assert "Traceback (most recent call last)" in text


def test_a_refused_websocket_origin_is_a_warning(captured):
    logging.getLogger("engineio.server").error("http://evil.example is not an accepted origin.")
    logging.getLogger("engineio.server").error("something else broke")
    lines = captured.getvalue().splitlines()
    assert lines == [
        "WARNING engineio.server http://evil.example is not an accepted origin.",
        "ERROR engineio.server something else broke",
    ]
