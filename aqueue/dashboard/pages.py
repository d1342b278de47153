"""The dashboard's HTML, rendered on the server; every value is escaped here.

Pages are whole documents; the parts that change (the overview's figures, a
task's state) are also rendered alone, as fragments pushed over server-sent
events and swapped in by ``static/dashboard.js``. Throughput charts are
inline SVG, so nothing is fetched from anywhere.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote

from ..deadletter import DeadLetter
from .layout import Links, age, button, layout, live, sparkline, table, when
from .readings import QueuePage, ScheduleRow, TaskPage
from .tasks_html import latency_chart, task_extras

__all__ = [
    "confirm_page",
    "dead_page",
    "message_page",
    "overview_live",
    "overview_page",
    "queue_page",
    "schedules_page",
    "task_live",
    "task_page",
]


# -- overview --------------------------------------------------------------------


def overview_live(links: Links, data: dict[str, Any]) -> str:
    """The overview's figures: queues with charts, live workers."""
    throughput = data.get("throughput", {})
    latency = data.get("latency", {})
    queues = table(
        [
            "queue",
            "waiting",
            "running",
            "delayed",
            "dead",
            "oldest waiting",
            "finished/s",
            "enqueue to finish",
        ],
        (
            [
                f'<a href="{escape(links.queue(q["queue"]))}">{escape(q["queue"])}</a>',
                f'<span data-figure="waiting">{q["waiting"]}</span>',
                f'<span data-figure="running">{q["pending"]}</span>',
                f'<span data-figure="delayed">{q["delayed"]}</span>',
                f'<a data-figure="dead" href="{escape(links.to("/dead", queue=q["queue"]))}">'
                f"{q['dead']}</a>",
                escape(age(q["oldest_waiting_age"])),
                sparkline(throughput.get(q["queue"], [])),
                latency_chart(latency.get(q["queue"], [])),
            ]
            for q in data["queues"]
        ),
        "no queues found",
    )
    workers = table(
        ["worker", "host", "pid", "concurrency", "running", "done", "failed", "heartbeat"],
        (
            [
                escape(w["name"]) + (" <em>(stopping)</em>" if w.get("stopping") else ""),
                escape(str(w.get("host") or "-")),
                escape(str(w["pid"])),
                escape(str(w["concurrency"])),
                escape(str(w["running_count"])),
                escape(str(w["stats"]["succeeded"])),
                escape(str(w["stats"]["failed"])),
                escape(age(w["heartbeat_age"])) + " ago",
            ]
            for w in data["workers"]
        ),
        "no live worker",
    )
    now = data["time"]
    running = table(
        ["task", "name", "queue", "attempt", "for", "worker"],
        (
            [
                f'<a href="{escape(links.task(r["id"], r["queue"]))}">{escape(r["id"])}</a>',
                escape(r["name"]),
                escape(r["queue"]),
                escape(str(r["attempt"])),
                escape(age(now - r["started_at"])),
                escape(r["worker"]),
            ]
            for r in data["running"][:100]
        ),
        "nothing running",
    )
    stamp = datetime.fromtimestamp(now, UTC).strftime("%H:%M:%S UTC")
    return (
        f"<section><h2>Queues</h2>{queues}{_charts_from(data.get('charts_from'))}</section>"
        f"<section><h2>Workers ({len(data['workers'])} alive)</h2>{workers}</section>"
        f"<section><h2>Running ({len(data['running'])})</h2>{running}"
        '<p class="stamp">workers and what they run are as each worker last reported '
        "(on every heartbeat)</p></section>"
        f'<p class="stamp">figures of {escape(stamp)}</p>'
    )


def _charts_from(charts_from: tuple[float, bool] | None) -> str:
    """Since when the charts know what happened (see :mod:`.history`)."""
    if charts_from is None:
        return ""
    at, from_events = charts_from
    if from_events:
        text = (
            f"charts go back to {when(at)}: the event stream's last minutes before the "
            "dashboard started, then its own samples"
        )
    else:
        text = (
            f"charts start when the dashboard started ({when(at)}); with events on "
            "(events=True) it reads back the five minutes before it from the event stream"
        )
    return f'<p class="stamp" id="charts-from">{escape(text)}</p>'


def overview_page(links: Links, data: dict[str, Any], notice: str | None = None) -> str:
    where = f"Redis {data['redis']} · prefix {data['prefix']}"
    body = f'<p class="where">{escape(where)}</p>' + live(
        links.to("/events/overview"), overview_live(links, data)
    )
    return layout(links, "Overview", body, notice)


# -- one queue -------------------------------------------------------------------


def queue_page(links: Links, page: QueuePage, notice: str | None = None) -> str:
    f = page.figures
    queue = f["queue"]
    now = time.time()
    figures = (
        f"<p class='figures'>waiting <b>{f['waiting']}</b> · running <b>{f['pending']}</b> · "
        f"delayed <b>{f['delayed']}</b> · dead <b>{f['dead']}</b></p>"
    )
    actions = button(links, "Purge waiting and delayed tasks", "purge-queue", queue=queue)
    waiting = table(
        ["task", "name", "waiting for"],
        (
            [
                f'<a href="{escape(links.task(tid, queue))}">{escape(tid)}</a>',
                escape(name or "?"),
                escape(age(now - at)),
            ]
            for _, tid, name, at in page.waiting
        ),
        "nothing waiting",
    )
    delayed = table(
        ["task", "due"],
        (
            [f'<a href="{escape(links.task(tid, queue))}">{escape(tid)}</a>', escape(when(due))]
            for tid, due in page.delayed
        ),
        "nothing delayed",
    )
    running = table(
        ["task", "name", "attempt", "worker"],
        (
            [
                f'<a href="{escape(links.task(r["id"], queue))}">{escape(r["id"])}</a>',
                escape(r["name"]),
                escape(str(r["attempt"])),
                escape(r["worker"]),
            ]
            for r in page.running
        ),
        "nothing running",
    )
    limit = max(len(page.waiting), len(page.delayed), len(page.running))
    body = (
        f"{figures}<p>{actions}</p>"
        f"<section><h2>Next waiting</h2>{waiting}</section>"
        f"<section><h2>Running</h2>{running}</section>"
        f"<section><h2>Delayed and retrying, soonest first</h2>{delayed}</section>"
        f'<p class="stamp">at most {max(limit, 50)} of each are listed</p>'
    )
    return layout(links, f"Queue {queue}", body, notice)


# -- one task --------------------------------------------------------------------


def task_live(links: Links, page: TaskPage) -> str:
    """The parts of a task's page that change while it runs."""
    info = page.info
    rows = [
        (
            "state",
            f'<span class="state {escape(info.status.value)}" data-figure="state">'
            f"{escape(info.status.value)}</span>",
        ),
        ("name", escape(info.name or "?")),
        (
            "queue",
            f'<a href="{escape(links.queue(info.queue or ""))}">{escape(info.queue or "?")}</a>',
        ),
        ("attempts", escape(str(info.attempt))),
        ("worker", escape(info.worker or "-")),
        ("enqueued", escape(when(info.enqueued_at))),
        ("started", escape(when(info.started_at))),
        ("finished", escape(when(info.finished_at))),
    ]
    if info.eta is not None and not info.status.is_final:
        rows.append(("due", escape(when(info.eta))))
    if info.started_at and info.finished_at:
        rows.append(("took", escape(age(info.finished_at - info.started_at))))
    details = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    out = f'<table class="details">{details}</table>'
    if page.progress is not None:
        value, message = page.progress
        if isinstance(value, int | float) and 0 <= value <= 1:
            bar = f'<progress max="1" value="{value}"></progress> {value * 100:.0f}%'
        else:
            bar = escape(repr(value))
        out += f"<section><h2>Progress</h2><p>{bar} {escape(message)}</p></section>"
    if page.result is not None:
        out += f'<section><h2>Result</h2><pre class="result">{escape(page.result)}</pre></section>'
    if page.error_type is not None:
        out += (
            f'<section><h2>Error</h2><p class="error"><b>{escape(page.error_type)}</b>: '
            f"{escape(page.error_message or '')}</p>"
        )
        if page.traceback:
            out += f'<pre class="traceback">{escape(page.traceback)}</pre>'
        out += "</section>"
    if page.can_abort and info.queue:
        out += "<p>" + button(links, "Abort this task", "abort", queue=info.queue, task=info.id)
        out += "</p>"
    return out + task_extras(links, page)


def task_page(links: Links, page: TaskPage, notice: str | None = None) -> str:
    info = page.info
    arguments = ""
    if page.args is not None or page.kwargs is not None:
        arguments = (
            "<section><h2>Arguments</h2>"
            f'<pre class="args">args {escape(page.args or "-")}\n'
            f"kwargs {escape(page.kwargs or '-')}</pre></section>"
        )
    elif not info.status.is_final:
        arguments = (
            '<p class="empty">Arguments are shown while the task is delayed, retrying or '
            "running, once it has failed, and while it waits among the next 100 of its "
            "queue (further back, its message is found only by reading the queue).</p>"
        )
    stream = links.to(f"/events/tasks/{quote(info.id, safe='')}", queue=info.queue)
    body = live(stream, task_live(links, page)) + arguments
    return layout(links, f"Task {info.id}", body, notice)


# -- dead letters, schedules -------------------------------------------------------


def dead_page(
    links: Links,
    letters: Sequence[DeadLetter],
    queues: Sequence[str],
    queue: str | None,
    notice: str | None = None,
) -> str:
    rows = (
        [
            escape(when(d.at)),
            f'<a href="{escape(links.queue(d.queue))}">{escape(d.queue)}</a>',
            (
                f'<a href="{escape(links.task(d.task_id, d.queue))}">{escape(d.task_id)}</a>'
                if d.task_id
                else "-"
            ),
            escape(d.task_name or "?"),
            escape(d.reason),
            f'<span class="error">{escape(d.error)}</span>',
            escape(str(d.attempts)),
            button(links, "Replay", "replay", queue=d.queue, entry=d.entry_id),
        ]
        for d in letters
    )
    listing = table(
        ["when", "queue", "task", "name", "reason", "error", "attempts", ""],
        rows,
        "no dead-lettered messages",
    )
    purges = " ".join(
        button(links, f"Purge dead letters of {q}", "purge-dead", queue=q)
        for q in ([queue] if queue else queues)
    )
    filters = " · ".join(
        f'<a href="{escape(links.to("/dead", queue=q))}">{escape(q)}</a>' for q in queues
    )
    body = (
        f'<p class="where">queues: <a href="{escape(links.to("/dead"))}">all</a> · {filters}</p>'
        f"{listing}<p>{purges}</p>"
    )
    title = f"Dead letters of {queue}" if queue else "Dead letters"
    return layout(links, title, body, notice)


def schedules_page(links: Links, rows: Sequence[ScheduleRow]) -> str:
    listing = table(
        ["periodic task", "queue", "schedule", "last run", "next run"],
        (
            [
                escape(r.name),
                escape(r.queue),
                escape(r.schedule),
                escape(when(r.last)),
                escape(when(r.next)),
            ]
            for r in rows
        ),
        "no periodic tasks",
    )
    return layout(links, "Schedules", listing)


# -- actions ---------------------------------------------------------------------

#: What each action does, in the words of its confirmation question.
QUESTIONS = {
    "abort": "Abort task {task} in queue {queue}? A waiting task never starts; a running "
    "one is cancelled.",
    "replay": "Put dead letter {entry} of queue {queue} back in its queue?",
    "purge-dead": "Delete every dead-lettered message of queue {queue}? This can't be undone.",
    "purge-queue": "Remove every waiting and delayed task of queue {queue}? Running tasks "
    "are not touched; this can't be undone.",
    "retry": "Run failed task {task} of queue {queue} again? Its message goes back into the "
    "queue under the same id, with its retries and expiry reset.",
}


def confirm_page(links: Links, action: str, fields: dict[str, str], csrf: str) -> str:
    question = QUESTIONS[action].format(
        **{k: fields.get(k, "?") for k in ("task", "queue", "entry")}
    )
    hidden = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in fields.items()
    )
    body = (
        f'<p class="question">{escape(question)}</p>'
        f'<form method="post" action="{escape(links.to("/actions/" + action))}">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">{hidden}'
        f'<button class="danger" id="confirm">Yes, {escape(action.replace("-", " "))}</button> '
        f'<a href="{escape(links.to("/"))}">Cancel</a></form>'
    )
    return layout(links, "Confirm", body)


def message_page(links: Links, title: str, text: str) -> str:
    return layout(links, title, f"<p>{escape(text)}</p>")
