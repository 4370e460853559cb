"""Form pieces: labels tied to their fields, inline errors."""

from __future__ import annotations

import reflex as rx


def label(text: str, field_id: str, *, visible: bool = True) -> rx.Component:
    """A `<label for=field_id>`: screen readers name the field by it, and a click
    on it focuses the field (Radix selects: their trigger button). `visible=False`
    keeps it for screen readers only, where the field speaks for itself on screen."""
    return rx.el.label(
        rx.text(text, size="2", weight="medium", as_="span"),
        html_for=field_id,
        class_name=None if visible else "visually-hidden",
        id=f"{field_id}-label",
    )


def field_error(errors, key: str, prefix: str = "error") -> rx.Component:
    """The message for `key` in a dict var of errors (from fictures.forms.field_errors);
    announced by screen readers as it appears (role="alert")."""
    return rx.cond(
        errors.contains(key),
        rx.text(errors[key], color_scheme="red", size="1", class_name="field-error", id=f"{prefix}-{key}",
                role="alert"),
    )
