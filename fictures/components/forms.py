"""Inline form errors."""

from __future__ import annotations

import reflex as rx


def field_error(errors, key: str, prefix: str = "error") -> rx.Component:
    """The message for `key` in a dict var of errors (from fictures.forms.field_errors)."""
    return rx.cond(
        errors.contains(key),
        rx.text(errors[key], color_scheme="red", size="1", class_name="field-error", id=f"{prefix}-{key}"),
    )
