"""One module per page; each registers itself with @rx.page and keeps its state beside it."""

from fictures.pages import account, community, story, writing

__all__ = ["account", "community", "story", "writing"]
