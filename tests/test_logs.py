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


def test_json_lines_carry_process_instance_and_request_id(captured, monkeypatch):
    import json as jsonlib
    import os

    from fictures.settings import settings

    formatter = logs.JsonFormatter("web-1")
    token = logs.request_id.set("req-12345678")
    try:
        record = logging.getLogger("fictures.test").makeRecord(
            "fictures.test", logging.WARNING, __file__, 1, "token=%s leaked?", ("abc123",), None
        )
    finally:
        logs.request_id.reset(token)
    line = jsonlib.loads(formatter.format(record))
    assert line["message"] == "token=*** leaked?"
    assert line["pid"] == os.getpid() and line["instance"] == "web-1"
    assert line["request_id"] == "req-12345678" and line["level"] == "WARNING"
    assert settings.log_format in ("text", "json")


async def test_http_requests_get_an_id_in_the_response_and_their_log_lines(api_client, caplog):
    from fictures.settings import settings

    logs.configure()
    caplog.set_level(logging.INFO)
    r = await api_client.post("/api/stories", content=b"x" * (settings.max_body_bytes + 1),
                              headers={"X-Request-ID": "abcdef123456"})
    assert r.status_code == 413 and r.headers["x-request-id"] == "abcdef123456"
    [line] = [rec for rec in caplog.records if "Refused a request body" in rec.getMessage()]
    assert line.request_id == "abcdef123456"
    fresh = await api_client.get("/api/health/live", headers={"X-Request-ID": "bad id!"})
    assert fresh.headers["x-request-id"] != "bad id!" and len(fresh.headers["x-request-id"]) == 32
