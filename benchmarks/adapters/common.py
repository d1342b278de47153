"""Shared, library-neutral plumbing for the benchmark adapters.

Everything here uses only the standard library so it runs unchanged in every
peer's virtualenv.  It holds:

* a tiny RESP client (sync and asyncio) used for bookkeeping, so completion
  counting never goes through the library under test;
* the in-worker completion counter (``COUNTER.hit()``), flushed to a separate
  *control* Redis every ~5 ms with one INCRBY, so counting adds no load per
  task to the broker Redis being measured;
* worker process management (spawn via the library's CLI, stop, peak RSS);
* the workload runner shared by all adapters (``run_adapter``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

HERE = os.path.dirname(os.path.abspath(__file__))
DONE_KEY = "bench:done"
START_KEY = "bench:first_start"  # hash: pid -> time.time() of first task start
FLUSH_INTERVAL = 0.005


# --------------------------------------------------------------------------- RESP


def _encode(args: tuple[Any, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, bytes):
            b = a
        elif isinstance(a, str):
            b = a.encode()
        else:
            b = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class RespError(Exception):
    pass


def _host_port(url: str) -> tuple[str, int, int]:
    u = urlparse(url)
    db = int((u.path or "/0").lstrip("/") or 0)
    return u.hostname or "127.0.0.1", u.port or 6379, db


class SyncRedis:
    """Minimal blocking RESP2 client (bookkeeping only)."""

    def __init__(self, url: str) -> None:
        host, port, db = _host_port(url)
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rb")
        if db:
            self.cmd("SELECT", db)

    def _read(self) -> Any:
        line = self.f.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RespError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RespError(f"bad reply type {line!r}")

    def cmd(self, *args: Any) -> Any:
        self.sock.sendall(_encode(args))
        return self._read()

    def readline(self) -> bytes:
        return self.f.readline()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.f.close()
            self.sock.close()


class AsyncRedis:
    """Minimal asyncio RESP2 client used by the in-worker flusher."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.r: asyncio.StreamReader | None = None
        self.w: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        host, port, db = _host_port(self.url)
        self.r, self.w = await asyncio.open_connection(host, port)
        if db:
            await self.cmd("SELECT", db)

    async def _read(self) -> Any:
        assert self.r is not None
        line = await self.r.readline()
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RespError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else (await self.r.readexactly(n + 2))[:-2]
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [await self._read() for _ in range(n)]
        raise RespError(f"bad reply {line!r}")

    async def cmd(self, *args: Any) -> Any:
        assert self.w is not None
        self.w.write(_encode(args))
        return await self._read()


def parse_info(raw: bytes | str) -> dict[str, str]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            k, v = line.split(":", 1)
            out[k] = v
    return out


def redis_snapshot(r: SyncRedis) -> dict[str, Any]:
    """Command counts and CPU of the broker Redis (our own INFO calls excluded)."""
    stats = parse_info(r.cmd("INFO", "commandstats"))
    cpu = parse_info(r.cmd("INFO", "cpu"))
    calls: dict[str, int] = {}
    for k, v in stats.items():
        name = k.removeprefix("cmdstat_")
        if name in ("info", "flushall", "config|resetstat", "monitor"):
            continue
        calls[name] = int(v.split(",", 1)[0].split("=")[1])
    return {
        "calls": calls,
        "cpu": float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
        "t": time.perf_counter(),
    }


def snapshot_diff(a: dict[str, Any], b: dict[str, Any], n: int) -> dict[str, Any]:
    diff = {k: b["calls"].get(k, 0) - a["calls"].get(k, 0) for k in b["calls"]}
    diff = {k: v for k, v in diff.items() if v}
    total = sum(diff.values())
    top = sorted(diff.items(), key=lambda kv: -kv[1])[:8]
    return {
        "calls_total": total,
        "calls_per_task": round(total / n, 2),
        "top_per_task": {k: round(v / n, 2) for k, v in top},
        "cpu_s": round(b["cpu"] - a["cpu"], 4),
        "cpu_s_per_1000": round((b["cpu"] - a["cpu"]) * 1000 / n, 4),
    }


# --------------------------------------------------------------------------- counter


class _AsyncCounter:
    """In-process completion counter for asyncio workers.

    ``hit()`` is called at the end of every benchmark task; the first call
    starts a background flusher on the running loop which sends one INCRBY to
    the *control* Redis every ~5 ms when there is something to report.
    ``mark_start()`` records the wall-clock time of the first task start in
    this process (one HSET per process, not per task).
    """

    def __init__(self) -> None:
        self.pending = 0
        self.first_start: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._start_sent = False

    def _ensure(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush_loop())

    def mark_start(self) -> None:
        if self.first_start is None:
            self.first_start = time.time()
        self._ensure()

    def hit(self) -> None:
        self.pending += 1
        self._ensure()

    async def _flush_loop(self) -> None:
        r = AsyncRedis(os.environ["BENCH_CTRL_URL"])
        await r.connect()
        while True:
            if self.first_start is not None and not self._start_sent:
                self._start_sent = True
                await r.cmd("HSET", START_KEY, os.getpid(), repr(self.first_start))
            if self.pending:
                n, self.pending = self.pending, 0
                await r.cmd("INCRBY", DONE_KEY, n)
            await asyncio.sleep(FLUSH_INTERVAL)


class _ThreadCounter:
    """Same contract for thread-pool workers (Celery ``-P threads``)."""

    def __init__(self) -> None:
        self.pending = 0
        self.first_start: float | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._start_sent = False

    def _ensure(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._flush_loop, daemon=True)
                    self._thread.start()

    def mark_start(self) -> None:
        if self.first_start is None:
            with self._lock:
                if self.first_start is None:
                    self.first_start = time.time()
        self._ensure()

    def hit(self) -> None:
        with self._lock:
            self.pending += 1
        self._ensure()

    def _flush_loop(self) -> None:
        r = SyncRedis(os.environ["BENCH_CTRL_URL"])
        while True:
            if self.first_start is not None and not self._start_sent:
                self._start_sent = True
                r.cmd("HSET", START_KEY, os.getpid(), repr(self.first_start))
            with self._lock:
                n, self.pending = self.pending, 0
            if n:
                r.cmd("INCRBY", DONE_KEY, n)
            time.sleep(FLUSH_INTERVAL)


COUNTER = _AsyncCounter()
THREAD_COUNTER = _ThreadCounter()


# --------------------------------------------------------------------------- processes


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                data = f.read()
            ppid = int(data.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(name))
    return kids


def process_tree(pid: int) -> list[int]:
    kids = _children_map()
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(kids.get(p, []))
    return out


def tree_peak_rss_mib(pids: list[int]) -> float:
    """Sum of VmHWM (peak resident set) over the worker process trees."""
    total_kb = 0
    for root in pids:
        for p in process_tree(root):
            try:
                with open(f"/proc/{p}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            total_kb += int(line.split()[1])
            except OSError:
                pass
    return round(total_kb / 1024, 1)


class Workers:
    """Worker processes started through the library's own CLI."""

    def __init__(self, cmd: list[str], count: int, env: dict[str, str], log_prefix: str) -> None:
        self.cmd, self.count, self.env, self.log_prefix = cmd, count, env, log_prefix
        self.procs: list[subprocess.Popen[bytes]] = []
        self.t_spawn = 0.0

    def start(self) -> None:
        self.t_spawn = time.time()
        for i in range(self.count):
            log = open(f"{self.log_prefix}-w{i}.log", "wb")  # noqa: SIM115
            p = subprocess.Popen(
                self.cmd,
                cwd=HERE,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            self.procs.append(p)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def peak_rss_mib(self) -> float:
        return tree_peak_rss_mib([p.pid for p in self.procs])

    def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.time() + 10
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.1, deadline - time.time()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)


def worker_env(broker_url: str, ctrl_url: str, concurrency: int) -> dict[str, str]:
    env = dict(os.environ)
    env["BENCH_REDIS_URL"] = broker_url
    env["BENCH_CTRL_URL"] = ctrl_url
    env["BENCH_CONCURRENCY"] = str(concurrency)
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    # make sure the CLI of *this* venv is found first
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


# --------------------------------------------------------------------------- library contract


class Lib:
    """What an adapter provides.  Client methods are async; sync libraries wrap."""

    name = "?"
    version_pkgs: tuple[str, ...] = ()
    has_bulk = False
    worker_note = ""
    result_note = ""

    def worker_cmd(self, concurrency: int) -> list[str]:
        raise NotImplementedError

    async def setup(self) -> None: ...

    async def close(self) -> None: ...

    async def enqueue_noop(self) -> None:
        raise NotImplementedError

    async def enqueue_sleep(self) -> None:
        raise NotImplementedError

    async def bulk_noop(self, n: int) -> None:
        raise NotImplementedError

    async def bulk_sleep(self, n: int) -> None:
        raise NotImplementedError

    async def roundtrip(self) -> None:
        """Enqueue one noop and await its result through the library's result API."""
        raise NotImplementedError

    async def enqueue_concurrent(
        self, fn: Callable[[], Awaitable[None]], n: int, conc: int
    ) -> None:
        """n enqueues from `conc` coroutines sharing one client."""
        it = iter(range(n))

        async def one() -> None:
            for _ in it:
                await fn()

        await asyncio.gather(*(one() for _ in range(conc)))


# --------------------------------------------------------------------------- workloads


class Mismatch(Exception):
    pass


async def wait_count(
    ctrl: SyncRedis, n: int, workers: Workers, timeout: float
) -> tuple[float, list[tuple[float, int]]]:
    """Poll the control counter until it reaches n; return (t_done, samples)."""
    samples: list[tuple[float, int]] = []
    deadline = time.time() + timeout
    while True:
        c = int(ctrl.cmd("GET", DONE_KEY) or 0)
        now = time.time()
        samples.append((now, c))
        if c >= n:
            return now, samples
        if now > deadline:
            raise Mismatch(f"timeout: only {c}/{n} tasks completed after {timeout:.0f}s")
        if not workers.alive():
            raise Mismatch(f"worker exited early with {c}/{n} tasks completed")
        await asyncio.sleep(0.005)


async def verify_exact(ctrl: SyncRedis, n: int) -> int:
    """After reaching n, wait a little and confirm no duplicate executions appear."""
    await asyncio.sleep(0.3)
    c = int(ctrl.cmd("GET", DONE_KEY) or 0)
    return c


def steady_rate(samples: list[tuple[float, int]], n: int) -> float | None:
    """Rate between 10% and 90% completion (first-crossing times)."""
    lo, hi = 0.1 * n, 0.9 * n
    t_lo = next((t for t, c in samples if c >= lo), None)
    t_hi = next((t for t, c in samples if c >= hi), None)
    if t_lo is None or t_hi is None or t_hi <= t_lo:
        return None
    c_lo = next(c for t, c in samples if c >= lo)
    c_hi = next(c for t, c in samples if c >= hi)
    return (c_hi - c_lo) / (t_hi - t_lo)


class Ctx:
    def __init__(self, lib: Lib, args: argparse.Namespace) -> None:
        self.lib, self.args = lib, args
        self.broker = SyncRedis(args.redis_url)
        self.ctrl = SyncRedis(args.ctrl_url)
        self.env = worker_env(args.redis_url, args.ctrl_url, args.concurrency)
        os.makedirs(args.log_dir, exist_ok=True)

    def workers(self, count: int, tag: str) -> Workers:
        prefix = os.path.join(self.args.log_dir, f"{self.lib.name}-{tag}")
        return Workers(self.lib.worker_cmd(self.args.concurrency), count, self.env, prefix)

    async def drain(self, n: int, count: int, tag: str, snap0: dict[str, Any]) -> dict[str, Any]:
        w = self.workers(count, tag)
        w.start()
        try:
            t_done, samples = await wait_count(self.ctrl, n, w, self.args.timeout)
            snap_done = redis_snapshot(self.broker)
            rss = w.peak_rss_mib()
            final = await verify_exact(self.ctrl, n)
        finally:
            w.stop()
        out: dict[str, Any] = {
            "completed": final,
            "expected": n,
            "drain_rate_from_start": round(n / (t_done - w.t_spawn), 1),
            "drain_rate_steady": _r(steady_rate(samples, n)),
            "drain_elapsed_s": round(t_done - w.t_spawn, 3),
            "worker_peak_rss_mib": rss,
            "redis_worker_phase": snapshot_diff(snap0, snap_done, n),
        }
        if final != n:
            out["error"] = f"MISMATCH: expected {n} completions, counted {final}"
        return out


def _r(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


async def wl_enqueue_then_drain(ctx: Ctx, mode: str, workers: int) -> dict[str, Any]:
    lib, n, conc = ctx.lib, ctx.args.n, ctx.args.concurrency
    await lib.setup()
    s0 = redis_snapshot(ctx.broker)
    t0 = time.perf_counter()
    if mode == "seq":
        for _ in range(n):
            await lib.enqueue_noop()
    elif mode == "concurrent":
        await lib.enqueue_concurrent(lib.enqueue_noop, n, conc)
    elif mode == "bulk":
        await lib.bulk_noop(n)
    t1 = time.perf_counter()
    s1 = redis_snapshot(ctx.broker)
    res: dict[str, Any] = {
        "enqueue_mode": mode,
        "enqueue_rate": round(n / (t1 - t0), 1),
        "enqueue_elapsed_s": round(t1 - t0, 3),
        "redis_enqueue_phase": snapshot_diff(s0, s1, n),
    }
    d = await ctx.drain(n, workers, f"{mode}-drain{workers}", s1)
    res.update(d)
    s2 = redis_snapshot(ctx.broker)
    res["redis_total"] = snapshot_diff(s0, s2, n)
    await lib.close()
    return res


async def wl_sleep(ctx: Ctx) -> dict[str, Any]:
    lib, n = ctx.lib, ctx.args.sleep_n
    await lib.setup()
    if lib.has_bulk:
        await lib.bulk_sleep(n)
    else:
        await lib.enqueue_concurrent(lib.enqueue_sleep, n, ctx.args.concurrency)
    w = ctx.workers(1, "sleep")
    w.start()
    try:
        t_done, _ = await wait_count(ctx.ctrl, n, w, ctx.args.timeout)
        final = await verify_exact(ctx.ctrl, n)
    finally:
        w.stop()
    starts = [float(v) for v in (ctx.ctrl.cmd("HVALS", START_KEY) or [])]
    t_first = min(starts) if starts else w.t_spawn
    ideal = n / ctx.args.concurrency * 0.1
    elapsed = t_done - t_first
    res: dict[str, Any] = {
        "completed": final,
        "expected": n,
        "sleep_elapsed_s": round(elapsed, 3),
        "sleep_ideal_s": ideal,
        "sleep_ratio": round(elapsed / ideal, 3),
        "sleep_elapsed_from_spawn_s": round(t_done - w.t_spawn, 3),
    }
    if final != n:
        res["error"] = f"MISMATCH: expected {n} completions, counted {final}"
    await lib.close()
    return res


async def wl_roundtrip(ctx: Ctx) -> dict[str, Any]:
    lib, n, warm = ctx.lib, ctx.args.rt_n, 20
    await lib.setup()
    ctx.env["BENCH_WORKLOAD"] = "roundtrip"  # lets a polling worker tighten its poll interval
    w = ctx.workers(1, "roundtrip")
    w.start()
    lat: list[float] = []
    try:
        # warm-up also waits for the worker to be ready
        t_dead = time.time() + ctx.args.timeout
        for _ in range(warm):
            await asyncio.wait_for(lib.roundtrip(), max(1.0, t_dead - time.time()))
        for _ in range(n):
            t0 = time.perf_counter()
            await asyncio.wait_for(lib.roundtrip(), 30)
            lat.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(0.05)
        final = await verify_exact(ctx.ctrl, n + warm)
    finally:
        w.stop()
    lat.sort()
    q = statistics.quantiles(lat, n=100, method="inclusive")
    res: dict[str, Any] = {
        "completed": final,
        "expected": n + warm,
        "rt_p50_ms": round(statistics.median(lat), 3),
        "rt_p99_ms": round(q[98], 3),
        "rt_mean_ms": round(statistics.fmean(lat), 3),
    }
    if final != n + warm:
        res["error"] = f"MISMATCH: expected {n + warm} completions, counted {final}"
    await lib.close()
    return res


def _monitor_thread(url: str, counts: dict[str, Counter[str]]) -> SyncRedis:
    """Attach MONITOR and classify each command as top-level (client) or inside Lua."""
    m = SyncRedis(url)
    m.sock.settimeout(None)
    m.sock.sendall(_encode(("MONITOR",)))
    m.readline()  # +OK

    def run() -> None:
        while True:
            try:
                line = m.readline()
            except (OSError, ValueError):
                break
            if not line:
                break
            text = line.decode("utf-8", "replace")
            try:
                src = text.split("[", 1)[1].split("]", 1)[0]
                cmd = text.split("] ", 1)[1].split(" ", 1)[0].strip().strip('"').lower()
            except IndexError:
                continue
            if cmd in ("info", "monitor", "flushall"):
                continue
            kind = "lua" if "lua" in src else "top"
            counts[kind][cmd] += 1

    th = threading.Thread(target=run, daemon=True)
    th.start()
    m.thread = th  # type: ignore[attr-defined]
    return m


def _monitor_stop(m: SyncRedis) -> None:
    with contextlib.suppress(OSError):
        m.sock.shutdown(socket.SHUT_RDWR)
    m.thread.join(5)  # type: ignore[attr-defined]
    m.close()


async def wl_cmdprofile(ctx: Ctx) -> dict[str, Any]:
    """Small run under MONITOR: commands per task split top-level vs inside Lua."""
    lib, n = ctx.lib, ctx.args.profile_n
    counts: dict[str, Counter[str]] = {"top": Counter(), "lua": Counter()}
    mon = _monitor_thread(ctx.args.redis_url, counts)
    await asyncio.sleep(0.1)
    await lib.setup()
    await lib.enqueue_concurrent(lib.enqueue_noop, n, ctx.args.concurrency)
    enq = {k: sum(v.values()) for k, v in counts.items()}
    w = ctx.workers(1, "profile")
    w.start()
    try:
        await wait_count(ctx.ctrl, n, w, ctx.args.timeout)
        final = await verify_exact(ctx.ctrl, n)
    finally:
        w.stop()
    await lib.close()
    await asyncio.sleep(0.3)
    _monitor_stop(mon)
    top_total = sum(counts["top"].values())
    lua_total = sum(counts["lua"].values())
    res: dict[str, Any] = {
        "completed": final,
        "expected": n,
        "profile_n": n,
        "cmds_top_level_per_task": round(top_total / n, 2),
        "cmds_in_lua_per_task": round(lua_total / n, 2),
        "cmds_enqueue_top_level_per_task": round(enq["top"] / n, 2),
        "top_level_breakdown_per_task": {
            k: round(v / n, 2) for k, v in counts["top"].most_common(10)
        },
        "lua_breakdown_per_task": {k: round(v / n, 2) for k, v in counts["lua"].most_common(10)},
        "note": "includes worker start-up/idle polling and shutdown during the run",
    }
    if final != n:
        res["error"] = f"MISMATCH: expected {n} completions, counted {final}"
    return res


def versions(lib: Lib) -> dict[str, Any]:
    from importlib import metadata

    out: dict[str, Any] = {"python": sys.version.split()[0]}
    for p in lib.version_pkgs:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    try:
        import uvloop  # noqa: F401

        out["uvloop_installed"] = metadata.version("uvloop")
    except ImportError:
        out["uvloop_installed"] = None
    out["worker"] = lib.worker_note
    out["result_api"] = lib.result_note
    return out


WORKLOADS = {
    "seq_drain1": lambda c: wl_enqueue_then_drain(c, "seq", 1),
    "concurrent_drain2": lambda c: wl_enqueue_then_drain(c, "concurrent", 2),
    "bulk_drain1": lambda c: wl_enqueue_then_drain(c, "bulk", 1),
    "sleep": wl_sleep,
    "roundtrip": wl_roundtrip,
    "cmdprofile": wl_cmdprofile,
}


def run_adapter(make_lib: Callable[[], Lib]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis-url", default="")
    ap.add_argument("--ctrl-url", default="")
    ap.add_argument("--workload", required=True, choices=[*WORKLOADS, "versions"])
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--sleep-n", type=int, default=2000)
    ap.add_argument("--rt-n", type=int, default=500)
    ap.add_argument("--profile-n", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--log-dir", default=os.path.join(HERE, "..", "results", "raw"))
    args = ap.parse_args()
    os.environ["BENCH_REDIS_URL"] = args.redis_url or "redis://127.0.0.1:1/0"
    os.environ["BENCH_CTRL_URL"] = args.ctrl_url or "redis://127.0.0.1:1/0"
    os.environ["BENCH_CONCURRENCY"] = str(args.concurrency)
    lib = make_lib()
    if args.workload == "versions":
        print(json.dumps(versions(lib)))
        return
    if args.workload == "bulk_drain1" and not lib.has_bulk:
        print(json.dumps({"skipped": "n/a: no bulk enqueue API"}))
        return
    ctx = Ctx(lib, args)
    try:
        res = asyncio.run(WORKLOADS[args.workload](ctx))
    except Mismatch as e:
        res = {"error": f"MISMATCH: {e}"}
    print(json.dumps(res), flush=True)
