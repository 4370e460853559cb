"""Story and post cards."""

from __future__ import annotations

import reflex as rx

from fictures.components.when import when


def genre_badge(genre) -> rx.Component:
    return rx.cond(genre != "", rx.badge(genre, variant="soft", color_scheme="iris"))


def story_card(card, *, is_new: bool | rx.Var[bool] = False, arrived: bool = False) -> rx.Component:
    """A story's card; `is_new` shows the NEW badge (data-new="1", which the
    community page's seen tracker watches), `arrived` animates a live arrival."""
    new = is_new if isinstance(is_new, rx.Var) else rx.Var.create(is_new)
    return rx.card(
        rx.vstack(
            rx.hstack(
                rx.link(
                    rx.heading(card.title, size="4", class_name="story-title", as_="h3"),
                    href="/community/story/" + card.id.to_string(),
                ),
                rx.spacer(),
                rx.cond(new, rx.badge("NEW", color_scheme="green", variant="solid", high_contrast=True, class_name="new-badge")),
                genre_badge(card.genre),
                width="100%",
                align="center",
            ),
            rx.text("by ", card.author, " · ", when(card.published_at), size="2", color_scheme="gray"),
            rx.text(card.summary, size="2", class_name="story-summary"),
            spacing="2",
            width="100%",
        ),
        id="story-" + card.id.to_string(),
        class_name="story-card story-enter" if arrived else "story-card",
        data_new=rx.cond(new, "1", "0"),
        data_story_id=card.id,
        width="100%",
    )


def post_card(card) -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.hstack(
                rx.badge(card.type, variant="surface"),
                rx.text(card.title, weight="bold", class_name="post-title"),
                align="center",
            ),
            rx.text(card.body, size="2", white_space="pre-wrap"),
            rx.hstack(
                rx.text("by ", card.author, " · ", when(card.created_at), size="1", color_scheme="gray"),
                rx.cond(
                    card.story_title != "",
                    rx.link(
                        "on " + card.story_title,
                        href="/community/story/" + card.story_id.to_string(),
                        size="1",
                    ),
                ),
                spacing="2",
            ),
            spacing="1",
            width="100%",
        ),
        id="post-" + card.id.to_string(),
        class_name="post-card story-enter",
        width="100%",
    )


def load_more(more, on_click, busy, text: str, *, id: str) -> rx.Component:
    """The button under a list that appends its next page; gone at the list's end."""
    return rx.cond(
        more,
        rx.button(text, on_click=on_click, loading=busy, variant="soft", size="2", id=id,
                  class_name="load-more", width="100%"),
    )
