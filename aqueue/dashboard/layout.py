"""What every dashboard page shares: links under the mount point, tables, buttons, charts.

Every value is escaped by the caller or here; helpers that take HTML say so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from ..runtime.monitor import age
from .readings import CHART_BUCKET, HISTORY_SECONDS

__all__ = ["Links", "age", "button", "layout", "live", "sparkline", "table", "when"]


class Links:
    """URLs under the dashboard's mount point, and whether actions are offered."""

    def __init__(self, root: str, read_only: bool) -> None:
        self.root = root.rstrip("/")
        self.read_only = read_only

    def to(self, path: str, **query: Any) -> str:
        params = {k: v for k, v in query.items() if v is not None}
        return self.root + path + ("?" + urlencode(params) if params else "")

    def task(self, task_id: str, queue: str | None = None) -> str:
        return self.to(f"/tasks/{quote(task_id, safe='')}", queue=queue)

    def queue(self, queue: str) -> str:
        return self.to(f"/queues/{quote(queue, safe='')}")

    def confirm(self, action: str, **fields: Any) -> str:
        return self.to("/confirm", action=action, **fields)


def when(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], empty: str) -> str:
    """A table of already-escaped cells."""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="empty">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def button(links: Links, label: str, action: str, **fields: Any) -> str:
    if links.read_only:
        return ""
    href = escape(links.confirm(action, **fields))
    return f'<a class="action" href="{href}">{escape(label)}</a>'


def sparkline(rates: Sequence[float | None], width: int = 180, height: int = 36) -> str:
    """Tasks finished per second over the history, as small inline SVG bars."""
    known = [r for r in rates if r is not None]
    peak = max(known, default=0.0) or 1.0
    step = width / max(1, len(rates))
    bars = "".join(
        f'<rect x="{n * step:.1f}" y="{height - 1 - h:.1f}" width="{max(1.0, step - 1):.1f}" '
        f'height="{h:.1f}"/>'
        for n, r in enumerate(rates)
        if r is not None and (h := (r / peak) * (height - 3)) > 0
    )
    last = f"{known[-1]:.1f}/s" if known else "-"
    title = (
        f"tasks finished per second, {CHART_BUCKET}s bars over the last "
        f"{HISTORY_SECONDS // 60} minutes (peak {max(known, default=0.0):.1f}/s)"
    )
    return (
        f'<span class="chart"><svg width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img"><title>{escape(title)}</title>'
        f'<line x1="0" y1="{height - 0.5}" x2="{width}" y2="{height - 0.5}" class="axis"/>'
        f"{bars}</svg> <span class='rate'>{escape(last)}</span></span>"
    )


def layout(links: Links, title: str, body: str, notice: str | None = None) -> str:
    nav = "".join(
        f'<a href="{escape(links.to(path))}">{escape(label)}</a>'
        for path, label in (
            ("/", "Overview"),
            ("/tasks", "Tasks"),
            ("/dead", "Dead letters"),
            ("/schedules", "Schedules"),
        )
    )
    search = (
        f'<form class="search" method="get" action="{escape(links.to("/tasks"))}">'
        '<input name="id" placeholder="task id" aria-label="task id"> <button>Find</button></form>'
    )
    flag = '<span class="readonly">read-only</span>' if links.read_only else ""
    shown_notice = f'<p class="notice" id="notice">{escape(notice)}</p>' if notice else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)} · aqueue</title>"
        f"<link rel='stylesheet' href='{escape(links.to('/static/dashboard.css'))}'>"
        f"<script defer src='{escape(links.to('/static/dashboard.js'))}'></script>"
        f"</head><body><header><strong>aqueue</strong><nav>{nav}</nav>{search}{flag}</header>"
        f"<main><h1>{escape(title)}</h1>{shown_notice}{body}</main></body></html>"
    )


def live(url: str, fragment: str) -> str:
    return f'<div class="live" data-stream="{escape(url)}">{fragment}</div>'
