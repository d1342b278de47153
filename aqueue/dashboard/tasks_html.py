"""HTML of the tasks pages: tasks by state, a task's timeline, chunks and workflow
links, and the overview's latency chart. Every value is escaped here."""

from __future__ import annotations

import time
from collections.abc import Sequence
from html import escape

from ..core.status import TaskStatus
from .attempts import TASK_ENTRIES, Attempts
from .layout import Links, age, button, layout, table, when
from .listing import LISTED_STATES, TaskRow
from .readings import CHART_BUCKET, HISTORY_SECONDS, TaskPage

__all__ = ["latency_chart", "task_extras", "tasks_page"]

#: What the "when" column means for each state.
_WHEN = {
    TaskStatus.QUEUED: "waiting for",
    TaskStatus.RUNNING: "running for",
    TaskStatus.SCHEDULED: "due",
    TaskStatus.RETRYING: "retry due",
    TaskStatus.DEAD: "dead-lettered",
}


def tasks_page(
    links: Links,
    rows: Sequence[TaskRow],
    state: TaskStatus,
    queues: Sequence[str],
    queue: str | None,
    name: str | None,
    limit: int,
    heard_from: tuple[float, bool] | None = None,
) -> str:
    """Tasks in one state, filtered by queue and name; ``heard_from``: since when
    finished tasks are known, and whether from the event stream."""

    def tab(s: TaskStatus) -> str:
        if s is state:
            return f'<b class="tab">{escape(s.value)}</b>'
        href = links.to("/tasks", state=s.value, queue=queue, name=name)
        return f'<a class="tab" href="{escape(href)}">{escape(s.value)}</a>'

    tabs = " · ".join(tab(s) for s in LISTED_STATES)
    options = "".join(
        f'<option value="{escape(q)}"{" selected" if q == queue else ""}>{escape(q)}</option>'
        for q in queues
    )
    filters = (
        f'<form class="filters" method="get" action="{escape(links.to("/tasks"))}">'
        f'<input type="hidden" name="state" value="{escape(state.value)}">'
        '<label>queue <select name="queue"><option value="">all</option>'
        f"{options}</select></label> "
        f'<label>name <input name="name" value="{escape(name or "")}" '
        'placeholder="part of a task name"></label> <button>Filter</button></form>'
    )
    now = time.time()
    listing = table(
        ["task", "name", "queue", _WHEN.get(state, "finished"), ""],
        (
            [
                f'<a href="{escape(links.task(r.id, r.queue))}">{escape(r.id)}</a>',
                escape(r.name or "?"),
                f'<a href="{escape(links.queue(r.queue))}">{escape(r.queue)}</a>',
                escape(_moment(state, r.at, now)),
                escape(r.detail),
            ]
            for r in rows
        ),
        f"no {state.value} task"
        + (" matches these filters" if name or queue else "")
        + (_since(heard_from) if state in _HEARD else ""),
    )
    notes = f'<p class="stamp">at most {limit} are listed; every list is one bounded read'
    if state in _HEARD:
        notes += "; " + escape(_heard_note(state, heard_from))
    notes += "</p>"
    body = f'<p class="where">{tabs}</p>{filters}{listing}{notes}'
    return layout(links, f"Tasks {state.value}", body)


_HEARD = {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.ABORTED, TaskStatus.EXPIRED}


def _since(heard_from: tuple[float, bool] | None) -> str:
    if heard_from is not None and heard_from[1]:
        return f" finished since {when(heard_from[0])}"
    return " heard of since the dashboard started"


def _heard_note(state: TaskStatus, heard_from: tuple[float, bool] | None) -> str:
    """Where the finished lists start (see :mod:`.history`)."""
    at, from_events = heard_from or (None, False)
    if from_events:
        return (
            f"{state.value} tasks are those that finished since {when(at)}: read back from "
            "the event stream when the dashboard started, then heard on the queues' "
            "completion channels (the newest 1,000 per queue), while their records last"
        )
    started = f" ({when(at)})" if at is not None else ""
    return (
        f"{state.value} tasks are those the dashboard saw finish since it started{started} "
        "(the newest 1,000 per queue), while their records last; with events on "
        "(events=True) it also reads back the five minutes before it started"
    )


def _moment(state: TaskStatus, at: float | None, now: float) -> str:
    if at is None:
        return "-"
    if state in (TaskStatus.QUEUED, TaskStatus.RUNNING):
        return age(now - at)
    return when(at)


def task_extras(links: Links, page: TaskPage) -> str:
    """A task's timeline, workflow links, stream chunks and the retry button."""
    info = page.info
    out = ""
    if page.timeline:
        items = "".join(
            f'<li><span class="moment">{escape(when(at))}</span> {escape(what)}</li>'
            for what, at in page.timeline
        )
        note = ""
        if info.attempt > 1:
            note = (
                f'<p class="stamp">{info.attempt} attempts; the record keeps the times of '
                "the last one (and the last error while it retries)</p>"
            )
        out += f'<section><h2>Timeline</h2><ol class="timeline">{items}</ol>{note}</section>'
    if page.attempts is not None and page.attempts.rows:
        out += _attempts(page.attempts)
    if page.follows:
        items = "".join(
            f'<li>{escape(how)}: <a href="{escape(links.task(tid, queue))}">{escape(tid)}</a></li>'
            if tid
            else f"<li>{escape(how)}{f' (queue {escape(queue)})' if queue else ''}</li>"
            for how, queue, tid in page.follows
        )
        out += f'<section><h2>Workflow</h2><ul class="follows">{items}</ul></section>'
    if page.chunk_count:
        items = "".join(f"<li><code>{escape(c)}</code></li>" for c in page.chunks)
        more = page.chunk_count - len(page.chunks)
        tail = f'<p class="stamp">and {more} more</p>' if more > 0 else ""
        out += (
            f"<section><h2>Stream ({page.chunk_count} chunk"
            f'{"s" if page.chunk_count != 1 else ""})</h2><ol class="chunks">{items}</ol>'
            f"{tail}</section>"
        )
    if page.can_retry and info.queue:
        out += "<p>" + button(links, "Run this task again", "retry", queue=info.queue, task=info.id)
        out += "</p>"
    return out


def _attempts(attempts: Attempts) -> str:
    """Each attempt: start, end, worker, outcome, error."""
    rows = (
        [
            escape(str(a.number) if a.number else "-"),
            escape(a.worker or "-"),
            escape(when(a.started)),
            escape(when(a.ended)),
            escape(_duration(a.duration) if a.duration is not None else "-"),
            f'<span class="state {escape(a.outcome or "")}">'
            f"{escape(a.outcome or '(no outcome yet)')}</span>",
            f'<span class="error">{escape(a.error or "")}</span>',
        ]
        for a in attempts.rows
    )
    listing = table(["attempt", "worker", "started", "ended", "took", "outcome", "error"], rows, "")
    if not attempts.from_events and not attempts.complete:
        note = (
            f"the event stream's last {TASK_ENTRIES} entries since the task was enqueued "
            "hold none of its events (trimmed, or too many since): the record keeps only "
            "the last attempt"
        )
    elif not attempts.from_events:
        note = (
            "the record keeps only the last attempt; with events on (events=True) every "
            "attempt is read back from the event stream"
        )
    elif attempts.complete:
        note = "every attempt, from the event stream"
    else:
        note = (
            f"from the event stream's last {TASK_ENTRIES} entries since the task was "
            "enqueued: earlier attempts may be missing"
        )
    return (
        f'<section id="attempts"><h2>Attempts</h2>{listing}'
        f'<p class="stamp">{escape(note)}</p></section>'
    )


def latency_chart(values: Sequence[float | None], width: int = 180, height: int = 36) -> str:
    """Median seconds from enqueue to finish over the history, as inline SVG bars."""
    known = [v for v in values if v is not None]
    peak = max(known, default=0.0) or 1.0
    step = width / max(1, len(values))
    bars = "".join(
        f'<rect x="{n * step:.1f}" y="{height - 1 - h:.1f}" width="{max(1.0, step - 1):.1f}" '
        f'height="{h:.1f}"/>'
        for n, v in enumerate(values)
        if v is not None and (h := (v / peak) * (height - 3)) > 0
    )
    last = _duration(known[-1]) if known else "-"
    title = (
        f"median time from enqueue to finish, {CHART_BUCKET}s bars over the last "
        f"{HISTORY_SECONDS // 60} minutes (peak {_duration(max(known, default=0.0))}), "
        "from a sample of the tasks finished (see below the table since when)"
    )
    return (
        f'<span class="chart latency"><svg width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img"><title>{escape(title)}</title>'
        f'<line x1="0" y1="{height - 0.5}" x2="{width}" y2="{height - 0.5}" class="axis"/>'
        f"{bars}</svg> <span class='rate'>{escape(last)}</span></span>"
    )


def _duration(seconds: float) -> str:
    """Latency as people read it: milliseconds under a second."""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else age(seconds)
