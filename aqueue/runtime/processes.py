"""CPU-bound ``def`` tasks in processes that can really be stopped.

A ``def`` task runs in a thread by default, and a thread can't be stopped: a
task that times out or is aborted keeps running there until it returns.
``@app.task(executor="process")`` runs it in a pool of separate Python
processes instead (``python -m aqueue.runtime.process_main``), so:

- CPU-bound work runs beside the worker's event loop, not under its GIL;
- a timeout or an abort kills the process (SIGKILL) and a fresh one takes its
  place when next needed, so the work really stops;
- nothing is pickled: the parent sends the task's *reference* (module and
  qualified name, which the process imports) and the message's msgpack
  argument bytes as they came off the wire; the process decodes them against
  the function's annotations, exactly as a thread task's are, and sends back
  the msgpack-encoded value, or the error as data.

Frames on the pipes are a 4-byte big-endian length and a msgpack array. The
process writes frames to a copy of its standard output and points file
descriptor 1 at standard error, so a ``print()`` in task code can't corrupt
a frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import struct
import sys
import threading
import time
from typing import IO, Any

import msgspec

from ..core.arguments import ArgSpec
from ..core.errors import ConfigError, Retry
from ..core.protocol import ErrorInfo, describe_error, encode_value

__all__ = ["ProcessDied", "ProcessPool", "Reply", "reference", "serve"]

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode
_HEAD = struct.Struct(">I")

#: ``Reply.retry``: the error is not one the task retries on; it is (``retry_on``);
#: the task raised :class:`~aqueue.Retry` (``Reply.delay`` is its delay or None).
NO_RETRY, RETRY_ON, RETRY_ASKED = 0, 1, 2


class ProcessDied(Exception):
    """The process running a task ended without answering (crash, OOM kill, os._exit)."""


class Reply(msgspec.Struct, frozen=True):
    """What a task process answered: the encoded value, or the error as data."""

    ok: bool
    value: bytes = b""
    error: ErrorInfo | None = None
    retry: int = NO_RETRY
    delay: float | None = None


def reference(fn: Any) -> tuple[str, str]:
    """(module, qualified name) a task process imports ``fn`` by; a clear error if none."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if module == "__main__":
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        module = spec.name if spec is not None else None
    if not module or "<locals>" in qualname or module == "__main__":
        raise ConfigError(
            f"executor='process' needs a function defined at the top level of an importable "
            f"module (a task process imports it by name); {qualname or fn!r} is not"
        )
    return module, qualname


class _TaskProcess:
    """One task process and its two pipes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        self.stdin = proc.stdin
        self.stdout = proc.stdout

    @classmethod
    async def start(cls) -> _TaskProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "aqueue.runtime.process_main",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # Its own session: a terminal's Ctrl-C goes to the worker, which decides.
            start_new_session=True,
        )
        child = cls(proc)
        # The worker's import path (the App's directory, PYTHONPATH, ...) first.
        await child.send(["path", list(sys.path)])
        return child

    async def send(self, frame: list[Any]) -> None:
        body = _encode(frame)
        self.stdin.write(_HEAD.pack(len(body)) + body)
        await self.stdin.drain()

    async def receive(self) -> list[Any]:
        try:
            head = await self.stdout.readexactly(_HEAD.size)
            frame: list[Any] = _decode(await self.stdout.readexactly(_HEAD.unpack(head)[0]))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            code = await self.proc.wait()
            raise ProcessDied(
                f"the process running the task ended without answering (exit code {code}: "
                "killed, out of memory, or os._exit in task code)"
            ) from exc
        return frame

    async def kill(self) -> None:
        """Stop it now, whatever it runs (SIGKILL), and reap it."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()


class ProcessPool:
    """At most ``size`` task processes, started when first needed and kept for reuse.

    A call that times out, is cancelled (abort, lost lease, shutdown) or whose
    process died kills that process; the next call starts a fresh one.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: list[_TaskProcess] = []
        self._busy: set[_TaskProcess] = set()
        self._slots: asyncio.Semaphore | None = None

    @property
    def pids(self) -> list[int]:
        """The pids of the task processes alive now (tests look at them)."""
        return [p.proc.pid for p in (*self._idle, *self._busy)]

    async def call(
        self, module: str, qualname: str, args: bytes, kwargs: bytes, time_limit: float | None
    ) -> Reply:
        """Run ``module.qualname(*args, **kwargs)`` in a task process.

        Raises TimeoutError once ``time_limit`` passed (the process was killed).
        """
        if self._slots is None:  # made on the running loop
            self._slots = asyncio.Semaphore(self.size)
        async with self._slots:
            child = self._idle.pop() if self._idle else await _TaskProcess.start()
            self._busy.add(child)
            answered = False
            try:
                async with asyncio.timeout(time_limit):
                    await child.send(["call", module, qualname, args, kwargs])
                    frame = await child.receive()
                answered = True
            finally:
                self._busy.discard(child)
                if answered:
                    self._idle.append(child)
                else:  # timed out, cancelled, or died: it must not run on
                    await asyncio.shield(child.kill())
        if frame[0] == "ok":
            return Reply(True, value=frame[1])
        _, kind, message, tb, retry, delay = frame
        return Reply(False, error=ErrorInfo(kind, message, tb), retry=retry, delay=delay)

    async def close(self) -> None:
        """Stop every task process (the worker is stopping)."""
        everyone = [*self._idle, *self._busy]
        self._idle.clear()
        self._busy.clear()
        await asyncio.gather(*(p.kill() for p in everyone), return_exceptions=True)


# -- the task process ------------------------------------------------------------------


def _read(stream: IO[bytes], n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _resolve(module: str, qualname: str) -> tuple[Any, ArgSpec, tuple[type[BaseException], ...]]:
    """The function, its argument spec and the exceptions its task retries on."""
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    # A module-level name decorated with @app.task is the Task; its function is .fn.
    config = getattr(target, "config", None)
    fn = getattr(target, "fn", target)
    retry_on: tuple[type[BaseException], ...] = getattr(config, "retry_on", (Exception,))
    return fn, ArgSpec(fn), retry_on


def _run(
    cache: dict[tuple[str, str], tuple[Any, ArgSpec, tuple[type[BaseException], ...]]],
    frame: list[Any],
) -> list[Any]:
    _, module, qualname, args, kwargs = frame
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    try:
        found = cache.get((module, qualname))
        if found is None:
            found = cache[(module, qualname)] = _resolve(module, qualname)
        fn, spec, retry_on = found
        call_args, call_kwargs = spec.decode(args, kwargs)
        value = fn(*call_args, **call_kwargs)
    except BaseException as exc:  # task code's failure is data, the process goes on
        info = describe_error(exc)
        if isinstance(exc, Retry):
            return ["err", info.type, info.message, info.traceback, RETRY_ASKED, exc.delay]
        retry = RETRY_ON if isinstance(exc, retry_on) else NO_RETRY
        return ["err", info.type, info.message, info.traceback, retry, None]
    try:
        return ["ok", encode_value(value)]
    except (TypeError, ValueError, OverflowError) as exc:
        message = f"return value of {qualname} can't be encoded with msgspec: {exc}"
        return ["err", "aqueue.errors.SerializationError", message, "", NO_RETRY, None]


def _exit_with(parent: int) -> None:
    """End this process once its worker is gone, even mid-task (a SIGKILLed worker
    can't kill it, and a busy task process would not read the closed pipe)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


def serve() -> None:
    """The task process: answer call frames on stdin until it closes."""
    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # print() in task code goes to stderr, never into a frame
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer
    cache: dict[tuple[str, str], tuple[Any, ArgSpec, tuple[type[BaseException], ...]]] = {}
    while True:
        head = _read(inp, _HEAD.size)
        body = _read(inp, _HEAD.unpack(head)[0]) if head else None
        if body is None:
            return  # the worker closed the pipe (or died): nothing more to do
        frame = _decode(body)
        if frame[0] == "path":
            sys.path[:] = [*frame[1], *(p for p in sys.path if p not in frame[1])]
            continue
        reply = _encode(_run(cache, frame))
        out.write(_HEAD.pack(len(reply)) + reply)
