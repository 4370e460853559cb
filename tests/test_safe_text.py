"""User text never reaches Reflex's Var machinery undecoded: fictures.toasts.

Reflex 0.10.1 loops forever decoding `<reflex.Var>x</reflex.Var>` in a string
passed to `rx.toast(...)` at run time (see test_reflex_compat.py). These tests
run in a fresh interpreter with a timeout, so a regression fails instead of
hanging the suite.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

FICTURES = Path(__file__).resolve().parents[1] / "fictures"
# Runtime rx.* calls whose string arguments go through LiteralStringVar.create.
_RUNTIME_TEXT_CALLS = {"toast", "window_alert", "call_script", "console_log", "set_clipboard"}


def test_every_toast_helper_shows_var_tags_as_typed():
    code = textwrap.dedent(
        """
        import json
        import reflex as rx
        from reflex.event import Event
        from fictures import toasts
        texts = ["Nice <reflex.Var>x</reflex.Var>", "<reflex.Var>1</reflex.Var>", "\\x00 \\ud800 </script>"]
        for text in texts:
            for helper in (toasts.info, toasts.success, toasts.warning, toasts.error):
                spec = helper(text, description="by " + text, action=(text, rx.scroll_to("x")))
                js = Event.from_event_type(spec)[0].payload["function"]
                assert js.count(json.dumps(text)) == 2, js   # title and action label
                assert json.dumps("by " + text) in js, js
        print("ok")
        """
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("a toast with a var tag hung the interpreter") from None
    assert done.stdout.strip() == "ok", done.stderr[-3000:]


def _runtime_text_calls_with_variable_text(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        # rx.toast(...), rx.toast.info(...), rx.call_script(...)
        chain = []
        while isinstance(func, ast.Attribute):
            chain.append(func.attr)
            func = func.value
        if not (isinstance(func, ast.Name) and func.id == "rx" and chain):
            continue
        if chain[-1] not in _RUNTIME_TEXT_CALLS:
            continue
        # `callback=` names an event handler to call with the script's result: not text.
        args = [*node.args, *(k.value for k in node.keywords if k.arg != "callback")]
        if any(not isinstance(a, ast.Constant) for a in args if not _is_safe(a)):
            found.append(f"{path.name}:{node.lineno}")
    return found


def _is_safe(arg: ast.expr) -> bool:
    """A constant, or text passed through fictures.toasts.text (a Var, never decoded)."""
    if isinstance(arg, ast.Constant):
        return True
    return (
        isinstance(arg, ast.Call) and isinstance(arg.func, (ast.Attribute, ast.Name))
        and getattr(arg.func, "attr", getattr(arg.func, "id", "")) in {"text", "literal_text"}
    )


def test_no_runtime_rx_call_takes_unneutralised_text():
    offenders = [
        hit
        for path in sorted(FICTURES.rglob("*.py"))
        if path.name != "toasts.py"  # the one place that builds them, from text() Vars
        for hit in _runtime_text_calls_with_variable_text(path)
    ]
    assert offenders == [], f"use fictures.toasts instead of rx.toast with user text: {offenders}"


def test_the_check_above_catches_an_fstring_toast(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('import reflex as rx\ndef f(t):\n    return rx.toast.info(f"New: {t}")\n')
    assert _runtime_text_calls_with_variable_text(bad) == ["bad.py:3"]


def test_a_script_callback_is_a_handler_but_script_text_is_still_checked(tmp_path):
    code = tmp_path / "code.py"
    code.write_text(
        "import reflex as rx\n"
        "def f(t, h):\n"
        "    ok = rx.call_script('fx()', callback=h)\n"
        "    return rx.call_script(f'fx({t})', callback=h)\n"
    )
    assert _runtime_text_calls_with_variable_text(code) == ["code.py:4"]
