"""What the dashboard may show of a task's values: a task's ``redact=`` setting applied.

``@app.task(redact=True)`` hides the arguments, result and stream chunks of
that task on every page; ``redact=callable`` shows what the callable returns
for each value instead (the args tuple, the kwargs dict, the result, each
chunk), for instance with the secret fields masked. ``asgi_app(app,
redact=True)`` hides them for every task, which is also the only way to hide
anything when the dashboard runs without the App's code (a URL alone: task
settings live in code). Error types, messages and tracebacks are shown: an
operator needs them, and a task that puts secrets into its exception
messages should stop doing so.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..app import App

__all__ = ["MAX_SHOWN", "REDACTED", "Redactor", "shown"]

REDACTED = "(redacted)"
#: Most characters of arguments, results and tracebacks shown on a page.
MAX_SHOWN = 20_000

_any = msgspec.msgpack.Decoder()


def shown(value: Any) -> str:
    """A value as JSON when it can be, else its repr; cut to :data:`MAX_SHOWN`."""
    try:
        text = msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        text = repr(value)
    if len(text) > MAX_SHOWN:
        text = text[:MAX_SHOWN] + f"... ({len(text) - MAX_SHOWN} more characters)"
    return text


class Redactor:
    """Turns a task's value into the text a page shows, honouring ``redact=``."""

    def __init__(self, app: App, redact_all: bool = False) -> None:
        self.app = app
        self.redact_all = redact_all

    def hides(self, task_name: str | None) -> bool:
        """True when nothing of this task's values is shown."""
        return self.redact_all or self._rule(task_name) is True

    def show(self, task_name: str | None, value: Any) -> str:
        if self.redact_all:
            return REDACTED
        rule = self._rule(task_name)
        if rule is False:
            return shown(value)
        if rule is True:
            return REDACTED
        try:
            return shown(rule(value))
        except Exception as exc:  # the user's callable: never show the raw value instead
            return f"{REDACTED} (the task's redact callable raised {type(exc).__name__})"

    def _rule(self, task_name: str | None) -> Any:
        task = self.app.tasks.get(task_name) if task_name else None
        return task.config.redact if task is not None else False
