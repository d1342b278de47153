"""The minutes before the dashboard started, read back from the event stream.

The throughput and latency charts and the lists of finished tasks are made of
what the dashboard sees while it runs (a sample each second, the completion
pushes), so without more they start empty. With events on (``events=True``)
the event stream still holds the recent past: for each queue, once the
dashboard listens to its completion channel (so nothing falls in between),
one bounded read fills them in. It reads newest first, at most
:data:`HISTORY_ENTRIES` stream entries and no further back than the charts
draw (:data:`~aqueue.dashboard.readings.HISTORY_SECONDS`), never the whole
stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Sequence

from .._redis.connection import ANY_REDIS_ERROR
from ..client import Client
from ..core.events import Event, decode_events
from .background import BackgroundLoop
from .listing import LATENCY_HISTORY, LATENCY_SAMPLE, RECENT_PER_QUEUE, RecentOutcomes

__all__ = ["HISTORY_ENTRIES", "History"]

logger = logging.getLogger(__name__)

#: Stream entries read back at most, per stream (an entry holds the events of
#: one script call: one enqueue, or a worker's batch of up to 100 outcomes).
HISTORY_ENTRIES = 5000
#: Entries per round trip of that read.
PAGE = 500
#: Records read at most per queue for the latency of tasks whose ``queued``
#: event is older than what was read.
RECORD_READS = 1000
#: Latency samples kept of what was read (the chart draws a median per bar).
LATENCY_KEPT = 3000
#: Seconds between two throughput samples made from what was read.
SAMPLE_SPACING = 1.0
#: Seconds of history read back (as far as the charts draw).
WINDOW = LATENCY_HISTORY

#: Events that end a run (what the throughput chart counts), and those that
#: end a task (what the completion channel pushes: the finished lists, latency).
_ENDS_RUN = {"succeeded", "failed", "retrying", "aborted", "expired", "dead"}
_FINISHED = {"succeeded", "failed", "aborted", "expired"}


class History(BackgroundLoop):
    """What the event stream tells of each queue's last minutes before the dashboard."""

    task_name = "aqueue-dashboard-history"

    def __init__(
        self,
        client: Client,
        outcomes: RecentOutcomes,
        samples: Callable[[str], deque[tuple[float, int | None]]],
    ) -> None:
        self.client = client
        self.outcomes = outcomes
        #: A queue's throughput samples: (when, entries finished so far), oldest first.
        self._samples = samples
        #: When the dashboard began to watch (its own samples start there).
        self.started = time.time()
        #: Queue -> times its runs ended, oldest first, from the stream.
        self.ends: dict[str, list[float]] = {}
        #: Queue -> how far back what was read reaches (epoch seconds).
        self.reach: dict[str, float] = {}

    @property
    def enabled(self) -> bool:
        return self.client.settings.events

    def start(self) -> None:
        if self.enabled:
            super().start()

    async def _run(self) -> None:
        while True:
            # Once its completion channel is listened to (nothing falls in between)
            # and the sampler has counted its finished entries once (the anchor the
            # read-back counts back from; a queue with no group yet has none).
            waited = time.time() - self.started > 5.0
            fresh = sorted(
                q
                for q in set(self.outcomes.listening) - set(self.reach)
                if waited or any(f is not None for _, f in self._samples(q))
            )
            if fresh:
                try:
                    await self.load(fresh)
                except ANY_REDIS_ERROR as exc:
                    logger.warning("dashboard: can't read the event stream (%s); again soon", exc)
            await asyncio.sleep(0.5)

    async def load(self, queues: Sequence[str]) -> None:
        """Read back the last minutes of ``queues``' events and add them to the
        charts and lists, older than anything heard live."""
        now_ms = int(time.time() * 1000)
        oldest_ms = now_ms - WINDOW * 1000
        stream_of = {q: self.client.broker.events.key(q) for q in queues}
        wanted = set(queues)
        events: list[Event] = []
        reach: dict[str, float] = {}
        for stream in sorted(set(stream_of.values())):
            reach[stream] = oldest_ms / 1000
            read = 0
            before: str | None = None
            pages: list[list[Event]] = []
            while read < HISTORY_ENTRIES:
                want = min(PAGE, HISTORY_ENTRIES - read)
                page = await self.client.broker.events.newest(stream, oldest_ms, want, before)
                read += len(page)
                pages.append(
                    [
                        event
                        for entry_id, data in reversed(page)
                        for event in decode_events(entry_id, data)
                        if event.queue in wanted
                    ]
                )
                if len(page) < want:
                    break
                before = page[-1][0]
                await asyncio.sleep(0)  # decoding takes a while: let pages be served
            if read >= HISTORY_ENTRIES and before is not None:  # cut short: as far as it went
                reach[stream] = int(before.partition("-")[0]) / 1000
            for events_of_page in reversed(pages):
                events += events_of_page
        for queue in queues:
            await self._add(queue, [e for e in events if e.queue == queue])
            self._count_back(queue, reach[stream_of[queue]])
            self.reach[queue] = reach[stream_of[queue]]

    async def _add(self, queue: str, events: list[Event]) -> None:
        """One queue's events (oldest first) into the charts and finished lists."""
        enqueued: dict[str, float] = {}
        ends: list[float] = []
        finished: list[tuple[str, str, float]] = []
        for event in events:
            at = event.at.timestamp()
            if event.state == "queued" and event.attempt == 0:
                enqueued.setdefault(event.task_id, at)
            if event.state in _ENDS_RUN and event.worker:
                ends.append(at)
            if event.state in _FINISHED:
                finished.append((event.task_id, event.state, at))
        latency = [(at, at - enqueued[tid]) for tid, _, at in finished if tid in enqueued]
        unknown = [tid for tid, _, _ in reversed(finished) if tid not in enqueued]
        if unknown:  # enqueued before what was read: their records may still say when
            unknown = unknown[:RECORD_READS]
            for enq, fin in await self.client.views.record_times(queue, unknown):
                if enq is not None and fin is not None:
                    latency.append((fin / 1000, max(0.0, (fin - enq) / 1000)))
        latency.sort()
        if len(latency) > LATENCY_KEPT:  # evenly thinned: the chart draws medians
            step = len(latency) / LATENCY_KEPT
            latency = [latency[int(n * step)] for n in range(LATENCY_KEPT)]
        ends.sort()
        # No await from here on: what was heard live meanwhile stays after the past.
        self.ends[queue] = ends
        heard = self.outcomes.recent.setdefault(queue, deque(maxlen=RECENT_PER_QUEUE))
        live = list(heard)
        heard.clear()
        heard.extend(finished[-RECENT_PER_QUEUE:])
        heard.extend(live)
        samples = self.outcomes.latency.setdefault(
            queue, deque(maxlen=LATENCY_SAMPLE * LATENCY_HISTORY)
        )
        live_samples = list(samples)
        samples.clear()
        samples.extend(latency)
        samples.extend(live_samples)

    def _count_back(self, queue: str, reach: float) -> None:
        """Throughput samples before the sampler's first, one a second back to
        ``reach``: its count less the runs that ended since then, so the chart
        reads the past like the samples it took itself."""
        samples = self._samples(queue)
        anchor = next(((t, f) for t, f in samples if f is not None), None)
        if anchor is None:
            return
        first_at, first_count = anchor
        ends = self.ends.get(queue, [])  # sorted
        room = (samples.maxlen or 0) - len(samples)
        points: list[tuple[float, int | None]] = []
        at = first_at - SAMPLE_SPACING
        while at >= reach and len(points) < room:
            ended_since = bisect_left(ends, first_at) - bisect_left(ends, at)
            points.append((at, first_count - ended_since))
            at -= SAMPLE_SPACING
        samples.extendleft(points)  # newest first: they end up oldest first

    def charts_from(self) -> tuple[float, bool]:
        """Since when the charts and finished lists know what happened, and whether
        that came from the event stream (else: since the dashboard started)."""
        if not self.reach:
            return self.started, False
        return min(self.reach.values()), True
