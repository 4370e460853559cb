"""Who is here: the readers count with its names, and the typing line."""

from __future__ import annotations

import reflex as rx
from reflex.vars import Var, VarData


def readers(value: Var, label: str, *, id: str, singular: str | None = None) -> rx.Component:
    """ "N <label>" (`singular` when N is 1), opening a small popover with the
    logged-in readers' names; anonymous readers are only counted ("2 guests").
    `value` is a room value of type `fictures.presence.Readers`. Hidden at 0."""
    count, users, guests = value.count, value.users, value.guests
    more = count - guests - users.length()
    text = count.to_string() + " " + label
    if singular is not None:
        text = rx.cond(count == 1, "1 " + singular, text)
    return rx.cond(
        count > 0,
        rx.popover.root(
            rx.popover.trigger(
                rx.button(
                    rx.icon("eye", size=14),
                    rx.text(text, as_="span", id=id),
                    variant="ghost",
                    size="1",
                    color_scheme="gray",
                    id=f"{id}-button",
                    # Its name is its visible text ("3 reading now"); the popover lists who.
                    title="Who is here",
                ),
            ),
            rx.popover.content(
                rx.vstack(
                    rx.foreach(users, lambda name: rx.text(name, size="2", class_name="reader-name")),
                    rx.cond(more > 0, rx.text("and ", more.to_string(), " more", size="2")),
                    rx.cond(
                        guests > 0,
                        rx.text(
                            guests.to_string(), rx.cond(guests == 1, " guest", " guests"),
                            size="2", color_scheme="gray", class_name="reader-guests",
                        ),
                    ),
                    spacing="1",
                ),
                size="1",
                id=f"{id}-names",
            ),
        ),
    )


def typing_line(typers: Var, me: Var) -> rx.Component:
    """ "ada is writing a post…", "ada and basil are writing posts…", "3 people are
    writing posts…": `typers` (a room value: usernames) without `me`, computed in
    the browser, since the frame every tab of the room gets is the same."""
    data = VarData.merge(typers._get_all_var_data(), me._get_all_var_data())
    text = Var(
        _js_expr=f"""((typers, me) => {{
  const others = (typers ?? []).filter((name) => name !== me);
  if (others.length === 0) return "";
  if (others.length === 1) return others[0] + " is writing a post\u2026";
  if (others.length === 2) return others[0] + " and " + others[1] + " are writing posts\u2026";
  return others.length + " people are writing posts\u2026";
}})({typers!s}, {me!s})""",
        _var_type=str,
        _var_data=data,
    ).to(str)
    return rx.cond(
        text != "",
        rx.text(text, size="2", color_scheme="gray", style={"font_style": "italic"}, id="typing-line"),
    )
