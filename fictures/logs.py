"""Logging for the app's processes: one format, and no secrets in any line.

`configure()` installs a log record factory, so every record any library
writes in this process (Reflex's "Error processing event" lines with the tab's
token and form data, a Redis URL with its password, a bearer token in a
traceback) is redacted before a handler sees it, whichever handler that is.
"""

from __future__ import annotations

import logging
import re

_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"
_SECRET_KEY = r"[\w.-]*(?:token|password|passwd|secret|authorization|cookie|api[_-]?key)[\w.-]*"
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # scheme://user:password@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@'\"]*:)[^\s@/'\"]+@", re.I), r"\1***@"),
    # Authorization: Bearer <token>
    (re.compile(r"\b(bearer\s+)[A-Za-z0-9._~+/=-]+", re.I), r"\1***"),
    # 'password': 'x'  "auth_token_rx_state_": "x"  (dict reprs, JSON)
    (re.compile(rf"""(['"]{_SECRET_KEY}['"]\s*:\s*)(['"])(?:\\.|(?!\2).)*\2""", re.I), r"\1\2***\2"),
    # ['password', 'x']  (form data as [name, value] pairs)
    (re.compile(rf"""(\[\s*['"]{_SECRET_KEY}['"]\s*,\s*)(['"])(?:\\.|(?!\2).)*\2""", re.I), r"\1\2***\2"),
    # token=x, password=x (query strings, key=value text)
    (re.compile(rf"""(\b{_SECRET_KEY}=)[^\s&'",)]+""", re.I), r"\1***"),
    # Web Push subscriptions: 'endpoint': 'https://…', "p256dh": "…", 'auth': '…'
    (re.compile(r"""(['"](?:endpoint|p256dh|auth)['"]\s*:\s*)(['"])(?:\\.|(?!\2).)*\2"""), r"\1\2***\2"),
    # A tab's client token is the key to its state: keep a recognisable prefix only.
    (re.compile(r"\b([0-9a-f]{8})-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), r"\1-…"),
]
# Errors a client causes, not the server: logged as warnings.
_CLIENT_CAUSED = (("engineio.server", "is not an accepted origin"),)
_formatter = logging.Formatter()


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redacting(base):
    def make_record(*args, **kwargs) -> logging.LogRecord:
        record = base(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 (a bad format string: leave it to the handler)
            return record
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(_formatter.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        if record.levelno >= logging.ERROR and any(
            record.name == name and text in record.msg for name, text in _CLIENT_CAUSED
        ):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return record

    make_record.__fictures_redacting__ = True
    return make_record


def configure() -> None:
    """The process's log format and redaction (idempotent)."""
    logging.basicConfig(level=logging.INFO, format=_FORMAT)
    logging.getLogger("fictures").setLevel(logging.INFO)
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "__fictures_redacting__", False):
        logging.setLogRecordFactory(_redacting(factory))
