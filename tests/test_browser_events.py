"""What a browser may call: the explicit list, the socket gate, strict arguments."""

from __future__ import annotations

import pytest

from fictures import browser_events, reflex_compat
from fictures.bell import NotificationState
from fictures.browser_events import Rejected, check_frame, may_send, validated_payload
from fictures.fictures import app  # noqa: F401  (registers every page and state)
from fictures.pages.account import AccountState
from fictures.pages.admin import AdminState
from fictures.pages.community import CommunityState
from fictures.pages.story import StoryState
from fictures.pages.writing import WritingState
from fictures.state import SessionState

# Every event a browser can send. A new public method on a State is a new event
# any browser can call with any arguments: add it here only if a page wires it.
BROWSER_CALLABLE = {
    "SessionState": {"check_login", "require_login", "logout"},
    "AccountState": {"reset_form", "register", "login"},
    "CommunityState": {
        "live_start", "live_poll", "live_toggle_pause", "load", "set_genre", "view_new", "mark_seen",
        "load_more_stories", "load_more_posts",
    },
    "StoryState": {
        "live_start", "live_poll", "live_toggle_pause", "load", "set_post_type", "submit_post",
        "post_typing", "load_more_posts",
    },
    # Each checks the admin role in the database first (fictures.pages.admin).
    "AdminState": {"live_start", "live_poll", "live_toggle_pause", "load"},
    "WritingState": {
        "live_start", "live_poll", "live_toggle_pause",
        "load", "new_story", "edit", "set_title", "set_genre", "set_summary", "set_content",
        "save", "save_as_draft", "toggle_visibility", "delete",
    },
    # The navbar's bell and the account menu's notification toggles (every page).
    "NotificationState": {
        "mark_read", "mark_all_read", "open_notification", "set_push_status", "set_desktop_status",
    },
    # Reflex's own, sent by its frontend.
    "State": {"hydrate_and_load"},
    "OnLoadInternalState": {"on_load_internal"},
    "UpdateVarsInternalState": {"update_vars_internal"},
    "FrontendEventExceptionState": {"handle_frontend_exception"},
}


def _short(full_name: str) -> tuple[str, str]:
    state_path, _, method = full_name.rpartition(".")
    cls = next(c for c in reflex_compat.all_states() if c.get_full_name() == state_path)
    return cls.__name__, method


def _app_handlers() -> list[str]:
    """Handlers of the app's own states and Reflex's, not of states other tests
    define (Reflex files those defined in a function under reflex.istate.dynamic)."""
    modules = {c.get_full_name(): c.__module__ for c in reflex_compat.all_states()}
    return [
        name for name in reflex_compat.browser_callable()
        if modules[name.rpartition(".")[0]].startswith(("fictures.", "reflex."))
        and modules[name.rpartition(".")[0]] != "reflex.istate.dynamic"
    ]


def test_browser_callable_handlers_are_exactly_the_allow_list():
    callable_now: dict[str, set[str]] = {}
    for name in _app_handlers():
        if may_send(name):
            cls, method = _short(name)
            callable_now.setdefault(cls, set()).add(method)
    assert callable_now == BROWSER_CALLABLE


def test_everything_else_registered_is_blocked_reflex_machinery():
    """Registered but never accepted from a browser: setvar, Reflex's internals."""
    for name in _app_handlers():
        if may_send(name):
            continue
        _, method = _short(name)
        fn = reflex_compat.handler_function(name)
        assert method == "setvar" or fn.__module__.startswith("reflex"), name


def test_live_hooks_and_session_internals_are_plain_methods():
    for state in (CommunityState, StoryState, WritingState, AdminState):
        for hook in ("on_story_published", "on_story_updated", "on_story_deleted", "on_post_created",
                     "on_post_updated", "on_post_deleted", "live_reload"):
            assert reflex_compat.is_plain(state, hook), (state.__name__, hook)
    for name in ("live_receive", "live_set_ok", "seen_elsewhere", "live_room_names"):
        assert not hasattr(CommunityState, name)
    assert "seen_elsewhere" not in CommunityState.event_handlers
    assert "opened" not in StoryState.event_handlers
    for name in ("login_as", "current_user", "require_user"):
        assert name not in SessionState.event_handlers
    for name in ("refresh", "receive", "show", "user"):
        assert name not in NotificationState.event_handlers


def _event(state, method: str) -> str:
    return f"{state.get_full_name()}.{method}"


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("just a string", "JSON object"),
        (["a", "list"], "JSON object"),
        ({"name": 5}, "unknown"),
        ({"name": "no.such.event"}, "unknown"),
        ({"name": _event(SessionState, "setvar"), "payload": {"var_name": "user_id", "value": 4}}, "unknown"),
        ({"name": "reflex___state____state.hydrate"}, "unknown"),
        ({"name": _event(WritingState, "load"), "payload": [1]}, "payload"),
        ({"name": _event(WritingState, "load"), "router_data": "x"}, "router_data"),
        ({"name": _event(WritingState, "load"), "router_data": {"pathname": 5}}, "pathname"),
        ({"name": _event(WritingState, "load"), "router_data": {"query": {"a": {"b": 1}}}}, "query"),
    ],
)
def test_malformed_or_internal_frames_are_dropped(frame, reason):
    assert reason in (check_frame(frame) or "")


def test_wired_frames_pass():
    assert check_frame({
        "name": _event(WritingState, "delete"), "payload": {"story_id": 1},
        "router_data": {"pathname": "/writing", "query": {"a": "b", "c": ["d"]}, "asPath": "/writing"},
    }) is None


TAG = "<reflex.Var>x</reflex.Var>"


@pytest.mark.parametrize(
    ("state", "method", "payload"),
    [
        (WritingState, "delete", {"story_id": TAG}),
        (WritingState, "delete", {"story_id": "5"}),
        (WritingState, "delete", {"story_id": True}),
        (WritingState, "delete", {"story_id": 1.5}),
        (WritingState, "delete", {"story_id": 0}),
        (WritingState, "delete", {"story_id": 2**31}),
        (WritingState, "delete", {}),
        (WritingState, "delete", {"story_id": 1, "extra": 2}),
        (WritingState, "set_title", {"value": 5}),
        (WritingState, "set_title", {"value": None}),
        (WritingState, "save", {"publish": "yes"}),
        (StoryState, "submit_post", {"form": {"title": ["x"], "body": "y"}}),
        (StoryState, "submit_post", {"form": "title=x"}),
        (CommunityState, "set_genre", {"genre": {"$gt": ""}}),
        (CommunityState, "view_new", {"x": 1}),
        (CommunityState, "mark_seen", {"story_id": "7"}),
        (CommunityState, "mark_seen", {"story_id": 0}),
        (CommunityState, "mark_seen", {"story_id": 2**31}),
        (CommunityState, "mark_seen", {"story_id": [7]}),
        (CommunityState, "mark_seen", {}),
        (AdminState, "load", {"as_admin": True}),
        (AdminState, "live_start", {"room": "admin"}),
        (AccountState, "login", {"form": {"username": 1, "password": "p"}}),
        (NotificationState, "mark_read", {"notification_id": "3"}),
        (NotificationState, "mark_read", {"notification_id": 0}),
        (NotificationState, "open_notification", {"notification_id": TAG}),
        (NotificationState, "mark_all_read", {"user_id": 2}),
        (NotificationState, "set_push_status", {"status": "granted"}),
        (NotificationState, "set_desktop_status", {"status": TAG}),
    ],
)
def test_arguments_not_of_the_declared_type_are_rejected(state, method, payload):
    with pytest.raises(Rejected):
        validated_payload(_event(state, method), payload)


def test_client_storage_values_are_checked():
    update = "reflex___state____state.reflex___state____update_vars_internal_state.update_vars_internal"
    token_var = f"{SessionState.get_full_name()}.auth_token_rx_state_"
    assert validated_payload(update, {"vars": {token_var: "abc"}}) == {"vars": {token_var: "abc"}}
    for bad in ({token_var: 5}, {f"{SessionState.get_full_name()}.user_id": 4}, {"x.y": "z"}, ["a"]):
        with pytest.raises(Rejected):
            validated_payload(update, {"vars": bad})


def test_valid_arguments_pass_and_forms_arrive_as_dicts():
    key = reflex_compat.FORM_DATA_ENTRIES_KEY
    assert validated_payload(_event(WritingState, "delete"), {"story_id": 7}) == {"story_id": 7}
    assert validated_payload(_event(WritingState, "save"), {}) == {}
    assert validated_payload(_event(WritingState, "set_title"), {"value": TAG}) == {"value": TAG}
    form = {key: [["title", "T"], ["body", TAG]]}
    assert validated_payload(_event(StoryState, "submit_post"), {"form": form}) == {
        "form": {"title": "T", "body": TAG}
    }


async def test_middleware_drops_a_rejected_event_and_rewrites_a_valid_one():
    from reflex.event import Event

    middleware = browser_events.StrictArguments()
    bad = Event(name=_event(WritingState, "delete"), payload={"story_id": TAG})
    assert await middleware.preprocess(app=None, state=None, event=bad) is not None
    good = Event(name=_event(StoryState, "submit_post"),
                 payload={"form": {reflex_compat.FORM_DATA_ENTRIES_KEY: [["title", "T"]]}})
    assert await middleware.preprocess(app=None, state=None, event=good) is None
    assert good.payload == {"form": {"title": "T"}}


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, "fictures.test", True),
        ("http://fictures.test", "fictures.test", True),
        ("https://fictures.test:8443", "fictures.test:8443", True),
        ("http://evil.example", "fictures.test", False),
        ("http://fictures.test.evil.example", "fictures.test", False),
        ("null", "fictures.test", False),
    ],
)
def test_websocket_origins(origin, host, allowed):
    assert browser_events.origin_allowed(origin, {"HTTP_HOST": host}) is allowed


def test_text_arguments_that_no_browser_could_receive_back_are_rejected():
    with pytest.raises(Rejected, match="Unicode"):
        validated_payload(_event(WritingState, "set_title"), {"value": "a\ud800b"})
    form = {"form": {"title": "x", "body": "\udfff"}}
    with pytest.raises(Rejected, match="Unicode"):
        validated_payload(_event(StoryState, "submit_post"), form)
    assert validated_payload(_event(WritingState, "set_title"), {"value": "nul\x00 is sendable"})


def test_random_event_names_do_not_grow_a_cache():
    for i in range(5000):
        check_frame({"name": f"no.such.event{i}"})
    assert may_send.cache_info().currsize <= 1024
