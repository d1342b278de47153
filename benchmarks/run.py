#!/usr/bin/env python3
"""Side-by-side benchmark of aqueue and its peers on one private Redis.

    python benchmarks/run.py                      # everything, -n 20000, 3 repeats
    python benchmarks/run.py --quick              # CI smoke test: aqueue only, small N
    python benchmarks/run.py --peers arq,saq -n 5000 --repeat 3
    python benchmarks/run.py --peers '' --events  # aqueue with events off and on, side by side

The driver starts its own redis-server on a free port (plus a second, tiny one
used only for completion bookkeeping), creates one virtualenv per peer under
benchmarks/.venvs/<peer> (their Redis client pins clash), and runs every
workload for every library in the same run, rotating the library order between
repetitions.  Each library's adapter (benchmarks/adapters/<lib>_bench.py) runs
in that library's interpreter, starts the worker through the library's own CLI
and prints one JSON line.  aqueue, too, runs from a virtualenv of its own
(benchmarks/.venvs/aqueue: this checkout installed as a wheel with its runtime
dependencies only, so its bytecode is compiled once and no test or dev
package is imported on its path), except with --quick, which uses the
driver's own interpreter.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ADAPTERS = os.path.join(HERE, "adapters")
VENVS = os.path.join(HERE, ".venvs")
RESULTS = os.path.join(HERE, "results")
RAW = os.path.join(RESULTS, "raw")
sys.path.insert(0, ADAPTERS)

from common import SyncRedis, parse_info  # noqa: E402

# pip requirements per peer; each gets its own virtualenv.
PEERS: dict[str, list[str]] = {
    "arq": ["arq", "uvloop"],
    "saq": ["saq[redis,hiredis]", "typing_extensions", "uvloop"],
    "taskiq": ["taskiq", "taskiq-redis", "uvloop"],
    "streaq": ["streaq", "uvloop"],
    "celery": ["celery[redis]"],
    "bullmq": ["bullmq", "uvloop"],
}
ALL_LIBS = ["aqueue", *PEERS]
REPEATED = ["seq_drain1", "concurrent_drain2", "bulk_drain1", "sleep", "roundtrip"]
ONCE = ["cmdprofile"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- environment


def ensure_venv(peer: str, reinstall: bool) -> tuple[str | None, str | None]:
    """Return (python, None) or (None, reason)."""
    venv = os.path.join(VENVS, peer)
    py = os.path.join(venv, "bin", "python")
    marker = os.path.join(venv, ".bench-requirements")
    want = "\n".join(PEERS[peer])
    try:
        if reinstall and os.path.isdir(venv):
            shutil.rmtree(venv)
        if not os.path.exists(py):
            log(f"creating virtualenv for {peer}")
            subprocess.run([sys.executable, "-m", "venv", venv], check=True, capture_output=True)
        have = None
        if os.path.exists(marker):
            with open(marker) as f:
                have = f.read()
        if have != want:
            log(f"installing {peer}: {' '.join(PEERS[peer])}")
            r = subprocess.run(
                [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *PEERS[peer]],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if r.returncode != 0:
                tail = "\n".join(r.stderr.strip().splitlines()[-5:])
                return None, f"pip install failed: {tail}"
            with open(marker, "w") as f:
                f.write(want)
    except (subprocess.SubprocessError, OSError) as e:
        return None, f"virtualenv setup failed: {e}"
    return py, None


def aqueue_python(own_venv: bool, reinstall: bool) -> tuple[str | None, str | None]:
    """The interpreter aqueue's adapter runs in.

    With ``own_venv`` (every run but ``--quick``), aqueue gets a virtualenv like
    each peer's: this checkout installed as a wheel (not editable) with its
    runtime dependencies only. The peers are measured that way, so aqueue is
    too: an editable install under ``PYTHONDONTWRITEBYTECODE`` would compile
    aqueue again at every worker start, and the driver's venv holds the dev
    extra, whose OpenTelemetry SDK redis-py imports when it is installed.
    """
    py = sys.executable
    if own_venv:
        venv = os.path.join(VENVS, "aqueue")
        py = os.path.join(venv, "bin", "python")
        root = os.path.dirname(HERE)
        try:
            if reinstall and os.path.isdir(venv):
                shutil.rmtree(venv)
            if not os.path.exists(py):
                log("creating virtualenv for aqueue")
                subprocess.run(
                    [sys.executable, "-m", "venv", venv], check=True, capture_output=True
                )
            # The checkout as it is now, every run (its dependencies stay installed).
            pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            r = subprocess.run(
                [*pip, "--force-reinstall", "--no-deps", "--no-cache-dir", root],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if r.returncode == 0:  # the runtime dependencies, once
                r = subprocess.run([*pip, root], capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                tail = "\n".join(r.stderr.strip().splitlines()[-5:])
                return None, f"pip install failed: {tail}"
        except (subprocess.SubprocessError, OSError) as e:
            return None, f"virtualenv setup failed: {e}"
    r = subprocess.run([py, "-c", "import aqueue; aqueue.App"], capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"`import aqueue` failed in {py} ({last}); pip install -e ."
    return py, None


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != 6379:
            return port


class RedisServer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        os.makedirs(RAW, exist_ok=True)
        self.logf = open(os.path.join(RAW, f"redis-{name}.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=self.logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.time() + 10
        while True:
            try:
                self.client = SyncRedis(self.url)
                self.client.cmd("PING")
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server ({name}) did not start") from None
                time.sleep(0.05)

    def flushall(self) -> None:
        self.client.cmd("FLUSHALL")

    def version(self) -> str:
        return parse_info(self.client.cmd("INFO", "server"))["redis_version"]

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.cmd("SHUTDOWN", "NOSAVE")
        with contextlib.suppress(Exception):
            self.client.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.logf.close()


# --------------------------------------------------------------------------- running


def run_adapter(
    lib: str,
    py: str,
    workload: str,
    args: argparse.Namespace,
    broker: RedisServer,
    ctrl: RedisServer,
    tag: str,
) -> dict[str, Any]:
    adapter, _, variant = lib.partition("+")
    cmd = [
        py,
        os.path.join(ADAPTERS, f"{adapter}_bench.py"),
        "--workload",
        workload,
        "--redis-url",
        broker.url,
        "--ctrl-url",
        ctrl.url,
        "-n",
        str(args.n),
        "--sleep-n",
        str(args.sleep_n),
        "--rt-n",
        str(args.rt_n),
        "--profile-n",
        str(args.profile_n),
        "--concurrency",
        str(args.concurrency),
        "--timeout",
        str(args.timeout),
        "--log-dir",
        os.path.join(RAW, tag),
    ]
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    # "aqueue+events": the same adapter, producer and worker with the event stream on.
    env.pop("AQUEUE_EVENTS", None)
    if variant == "events":
        env["AQUEUE_EVENTS"] = "1"
    t0 = time.time()
    try:
        r = subprocess.run(
            cmd,
            cwd=ADAPTERS,
            capture_output=True,
            text=True,
            env=env,
            timeout=args.timeout * 2 + 120,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"adapter timed out after {time.time() - t0:.0f}s"}
    os.makedirs(os.path.join(RAW, tag), exist_ok=True)
    with open(os.path.join(RAW, tag, f"{lib}-{workload}.adapter.log"), "w") as f:
        f.write(f"$ {' '.join(cmd)}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}")
    lines = [ln for ln in r.stdout.strip().splitlines() if ln.startswith("{")]
    if not lines:
        err = (r.stderr.strip().splitlines() or [f"exit {r.returncode}, no output"])[-1]
        return {"error": f"adapter failed: {err}"}
    try:
        res: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError as e:
        return {"error": f"bad adapter output: {e}"}
    res["wall_s"] = round(time.time() - t0, 1)
    return res


def median_of(runs: list[dict[str, Any]], path: str) -> float | None:
    vals = []
    for r in runs:
        cur: Any = r
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if isinstance(cur, int | float):
            vals.append(float(cur))
    return round(statistics.median(vals), 3) if vals else None


# (label, workload, json path, unit/format, better)
METRICS: list[tuple[str, str, str, str]] = [
    ("enqueue sequential (tasks/s)", "seq_drain1", "enqueue_rate", "int"),
    ("enqueue concurrent x100 (tasks/s)", "concurrent_drain2", "enqueue_rate", "int"),
    ("enqueue bulk API (tasks/s)", "bulk_drain1", "enqueue_rate", "int"),
    ("drain 1 worker, from start (tasks/s)", "seq_drain1", "drain_rate_from_start", "int"),
    ("drain 1 worker, steady (tasks/s)", "seq_drain1", "drain_rate_steady", "int"),
    ("drain 2 workers, from start (tasks/s)", "concurrent_drain2", "drain_rate_from_start", "int"),
    ("drain 2 workers, steady (tasks/s)", "concurrent_drain2", "drain_rate_steady", "int"),
    ("sleep(0.1) x{sleep_n} @100: elapsed (s)", "sleep", "sleep_elapsed_s", "f2"),
    ("sleep(0.1) x{sleep_n}: ratio to ideal", "sleep", "sleep_ratio", "f2"),
    ("round trip p50 (ms)", "roundtrip", "rt_p50_ms", "f2"),
    ("round trip p99 (ms)", "roundtrip", "rt_p99_ms", "f2"),
    ("worker peak RSS, 1 worker (MiB)", "seq_drain1", "worker_peak_rss_mib", "f1"),
    ("Redis cmds/task (commandstats, all)", "seq_drain1", "redis_total.calls_per_task", "f1"),
    ("Redis cmds/task top-level (MONITOR)", "cmdprofile", "cmds_top_level_per_task", "f1"),
    ("Redis cmds/task inside Lua (MONITOR)", "cmdprofile", "cmds_in_lua_per_task", "f1"),
    ("Redis CPU s / 1000 tasks", "seq_drain1", "redis_total.cpu_s_per_1000", "f3"),
]


def fmt(v: float | None, kind: str) -> str:
    if v is None:
        return "-"
    if kind == "int":
        return f"{v:,.0f}"
    return f"{v:.{kind[1]}f}"


def summarize(
    libs: list[str],
    runs: dict[str, dict[str, list[dict[str, Any]]]],
    skipped: dict[str, str],
    args: argparse.Namespace,
) -> tuple[dict[str, dict[str, Any]], list[list[str]]]:
    medians: dict[str, dict[str, Any]] = {}
    header = ["metric", *libs]
    rows = [header]
    for label, wl, path, kind in METRICS:
        row = [label.format(sleep_n=args.sleep_n)]
        for lib in libs:
            lib_runs = runs.get(lib, {}).get(wl, [])
            ok = [r for r in lib_runs if "error" not in r and "skipped" not in r]
            if lib in skipped or (lib_runs and all("skipped" in r for r in lib_runs)):
                cell = "n/a"
            elif not ok:
                cell = "FAIL" if lib_runs else "-"
            else:
                v = median_of(ok, path)
                cell = fmt(v, kind)
                medians.setdefault(lib, {})[f"{wl}.{path}"] = v
            row.append(cell)
        rows.append(row)
    # completion check row
    row = ["runs with exact N completions"]
    for lib in libs:
        if lib in skipped:
            row.append("n/a")
            continue
        total = good = 0
        for wl_runs in runs.get(lib, {}).values():
            for r in wl_runs:
                if "skipped" in r:
                    continue
                total += 1
                good += int("error" not in r and r.get("completed") == r.get("expected"))
        row.append(f"{good}/{total}")
    rows.append(row)
    return medians, rows


def table_text(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for j, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [c.rjust(widths[i]) for i, c in enumerate(r) if i]
        out.append("  ".join(cells))
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def table_md(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" + "---:|" * (len(rows[0]) - 1)]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--quick", action="store_true", help="smoke test: aqueue only, small N, 1 repeat"
    )
    ap.add_argument("--peers", default=",".join(PEERS), help="comma list of peers ('' for none)")
    ap.add_argument("--no-aqueue", action="store_true")
    ap.add_argument(
        "--events", action="store_true", help="also run aqueue with events=True ('aqueue+events')"
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("-n", type=int, default=20000, help="tasks per enqueue/drain run")
    ap.add_argument("--sleep-n", type=int, default=2000)
    ap.add_argument("--rt-n", type=int, default=500)
    ap.add_argument("--profile-n", type=int, default=1000, help="tasks in the MONITOR run")
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=300, help="per-phase timeout, seconds")
    ap.add_argument("--workloads", default=",".join(REPEATED + ONCE))
    ap.add_argument("--reinstall", action="store_true", help="recreate the peer virtualenvs")
    ap.add_argument(
        "--out",
        default=None,
        help="output path prefix (default results/latest, or results/quick with --quick)",
    )
    args = ap.parse_args()
    if args.quick:
        args.peers, args.n, args.repeat = "", 1000, 1
        args.sleep_n, args.rt_n, args.profile_n = 500, 100, 200
        args.timeout = 60
    if args.out is None:
        args.out = os.path.join(RESULTS, "quick" if args.quick else "latest")

    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        ap.error(f"unknown peers {unknown}; known: {list(PEERS)}")
    libs = (
        ([] if args.no_aqueue else ["aqueue"]) + (["aqueue+events"] if args.events else []) + peers
    )
    workloads = [w for w in args.workloads.split(",") if w]
    os.makedirs(RAW, exist_ok=True)

    pythons: dict[str, str] = {}
    skipped: dict[str, str] = {}
    own_python: tuple[str | None, str | None] | None = None
    for lib in libs:
        own = lib.startswith("aqueue")
        if own:  # aqueue and aqueue+events share one interpreter
            if own_python is None:
                own_python = aqueue_python(not args.quick, args.reinstall)
            py, why = own_python
        else:
            py, why = ensure_venv(lib, args.reinstall)
        if py:
            pythons[lib] = py
        else:
            skipped[lib] = why or "unavailable"
            log(f"SKIP {lib}: {why}")
    active = [lib for lib in libs if lib in pythons]

    broker = RedisServer("broker")
    ctrl = RedisServer("control")
    log(f"private redis-server {broker.version()} on port {broker.port} (control: {ctrl.port})")
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python_driver": sys.version.split()[0],
        "redis_version": broker.version(),
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "versions": {},
        "skipped": skipped,
    }
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {lib: {} for lib in libs}
    t_start = time.time()
    try:
        floor = subprocess.run(
            [
                sys.executable,
                os.path.join(HERE, "floor.py"),
                "-n",
                "30000" if args.quick else "100000",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        meta["floor"] = json.loads(floor.stdout) if floor.returncode == 0 else floor.stderr[-300:]
        log(f"machine floor: {meta['floor']}")
        for lib in active:
            v = run_adapter(lib, pythons[lib], "versions", args, broker, ctrl, "v")
            meta["versions"][lib] = v
            log(f"{lib}: {v}")

        for rep in range(args.repeat):
            order = active[rep % len(active) :] + active[: rep % len(active)] if active else []
            for wl in workloads:
                if wl in ONCE and rep:
                    continue
                for lib in order:
                    broker.flushall()
                    ctrl.flushall()
                    res = run_adapter(lib, pythons[lib], wl, args, broker, ctrl, f"r{rep}")
                    res["rep"] = rep
                    runs[lib].setdefault(wl, []).append(res)
                    if "error" in res:
                        log(f"!! {lib} {wl} rep {rep}: {res['error']}")
                    elif "skipped" in res:
                        log(f"{lib} {wl}: {res['skipped']}")
                    else:
                        log(f"{lib} {wl} rep {rep}: {_brief(res)}")
    finally:
        broker.stop()
        ctrl.stop()
    meta["total_wall_s"] = round(time.time() - t_start, 1)

    medians, rows = summarize(libs, runs, skipped, args)
    text = table_text(rows)
    print()
    print(text)
    for lib, why in skipped.items():
        print(f"  {lib}: skipped - {why}")
    errors = [
        (lib, wl, r["error"])
        for lib, w in runs.items()
        for wl, rs in w.items()
        for r in rs
        if "error" in r
    ]
    for lib, wl, e in errors:
        print(f"  !! {lib} {wl}: {e}")

    with open(args.out + ".json", "w") as f:
        json.dump({"meta": meta, "medians": medians, "table": rows, "runs": runs}, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write(render_md(meta, rows, skipped, errors))
    log(f"wrote {args.out}.json and {args.out}.md in {meta['total_wall_s']}s")
    return 1 if errors else 0


def render_md(
    meta: dict[str, Any],
    rows: list[list[str]],
    skipped: dict[str, str],
    errors: list[tuple[str, str, str]],
) -> str:
    a = meta["args"]
    lines = [
        f"# aqueue benchmark — {meta['date']}",
        "",
        f"Machine: {meta['cpu_count']} CPUs ({meta['cpu_model']}), {meta['platform']}; "
        f"driver Python {meta['python_driver']}; Redis {meta['redis_version']} "
        "(private instance, no persistence).",
        f"Settings: N={a['n']}, sleep tasks={a['sleep_n']}, round trips={a['rt_n']}, "
        f"MONITOR run N={a['profile_n']}, concurrency={a['concurrency']}, "
        f"repeats={a['repeat']} (medians shown). Total wall time {meta['total_wall_s']} s.",
        f"Floor (no-op coroutines/s under Semaphore(100), one process): "
        f"{(meta.get('floor') or {}).get('floor_tasks_per_s')}",
        "",
        table_md(rows),
        "",
        "Versions:",
        "",
    ]
    for lib, v in meta["versions"].items():
        skip = ("worker", "result_api", "wall_s")
        pk = ", ".join(f"{k} {val}" for k, val in v.items() if k not in skip)
        lines.append(
            f"- **{lib}**: {pk}; worker: {v.get('worker')}; results: {v.get('result_api')}"
        )
    for lib, why in skipped.items():
        lines.append(f"- **{lib}**: NOT RUN — {why}")
    if errors:
        lines += ["", "Errors:", ""] + [f"- {lib} {wl}: {e}" for lib, wl, e in errors]
    lines.append("")
    return "\n".join(lines)


def _brief(res: dict[str, Any]) -> str:
    keys = [
        "enqueue_rate",
        "drain_rate_from_start",
        "drain_rate_steady",
        "sleep_elapsed_s",
        "rt_p50_ms",
        "rt_p99_ms",
        "cmds_top_level_per_task",
        "cmds_in_lua_per_task",
        "wall_s",
    ]
    return " ".join(f"{k}={res[k]}" for k in keys if k in res)


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


if __name__ == "__main__":
    sys.exit(main())
