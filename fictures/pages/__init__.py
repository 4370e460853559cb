"""One module per page; each registers itself with @rx.page and keeps its state beside it."""

from fictures.pages import account, admin, community, story, writing

__all__ = ["account", "admin", "community", "story", "writing"]
