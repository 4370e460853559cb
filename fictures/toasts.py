"""Toasts (and any other `rx.*` value built at run time) that may hold user text.

Reflex decodes its internal var tags in every Python string that becomes part
of a component or event at run time: a story titled `<reflex.Var>x</reflex.Var>`
passed to `rx.toast(...)` froze the whole worker. So event handlers never hand
user text to `rx.*` directly: they call these helpers, which pass every string
through `text()` (see `fictures.reflex_compat.literal_text`).

    return toasts.info(f"New story: {event.title}", description=f"by {author}")

tests/test_safe_text.py fails on any `rx.toast` call in fictures/ whose text is
not a constant.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator
from typing import Any, Literal

import reflex as rx

from fictures.reflex_compat import ToastAction, literal_text

Level = Literal["info", "success", "warning", "error"]


def text(value: Any) -> rx.Var[str]:
    """`value` as text, shown exactly as written, never read as Reflex markup."""
    return literal_text(str(value))


@dataclasses.dataclass(frozen=True)
class Held:
    """A toast asked for while toasts were held (see `holding`)."""

    message: str
    level: Level = "info"
    description: str | None = None
    action: tuple[str, Any] | None = None

    def show(self) -> Any:
        return toast(self.message, level=self.level, description=self.description, action=self.action)


_held: contextvars.ContextVar[list[Held] | None] = contextvars.ContextVar("fictures_held_toasts", default=None)


@contextlib.contextmanager
def holding() -> Iterator[list[Held]]:
    """Within this block, the helpers below record their toasts in the list
    yielded and return None instead (a caller that replays many events shows
    one summary instead of a toast each: see `LiveState.live_start`)."""
    held: list[Held] = []
    token = _held.set(held)
    try:
        yield held
    finally:
        _held.reset(token)


def toast(
    message: str,
    *,
    level: Level = "info",
    description: str | None = None,
    action: tuple[str, Any] | None = None,
) -> Any:
    """A toast event; `action` is (label, event) for a button on the toast."""
    if (held := _held.get()) is not None:
        held.append(Held(message, level, description, action))
        return None
    props: dict[str, Any] = {}
    if description is not None:
        props["description"] = text(description)
    if action is not None:
        label, on_click = action
        props["action"] = ToastAction(label=text(label), on_click=on_click)
    return rx.toast(text(message), level=level, **props)


def info(message: str, **kwargs: Any) -> Any:
    return toast(message, level="info", **kwargs)


def success(message: str, **kwargs: Any) -> Any:
    return toast(message, level="success", **kwargs)


def warning(message: str, **kwargs: Any) -> Any:
    return toast(message, level="warning", **kwargs)


def error(message: str, **kwargs: Any) -> Any:
    return toast(message, level="error", **kwargs)
