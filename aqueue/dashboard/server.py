"""A small asyncio HTTP/1.1 server for one ASGI application: what ``aqueue dashboard`` runs.

The dashboard is a handful of pages and one event stream per open page, seen
by a few operators; it needs no production web server, and a server of our
own keeps ``aqueue dashboard`` free of any dependency. It reads one request
per connection (request bodies with a ``Content-Length``, no chunked
uploads, no upgrades), hands it to the ASGI application, writes the
response as it is sent (so server-sent events stream) and closes the
connection. Mounted in a web app, the same ASGI application runs on that
app's server instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

__all__ = ["ASGIApp", "DashboardServer", "serve"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Longest request head (request line + headers) and body read.
MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
#: Seconds a client has to send its request.
READ_TIMEOUT = 10.0

_REASONS = {
    200: "OK",
    303: "See Other",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    500: "Internal Server Error",
}


class DashboardServer:
    """Serves one ASGI application on a host and port until :meth:`close`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._accept, host, port)

    async def close(self) -> None:
        """Stop listening and end open connections (event streams included)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # closing: asyncio would log a cancelled connection task as an error
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            await _plain(writer, 413, "request head too large")
            return
        if len(head) > MAX_HEAD:
            await _plain(writer, 413, "request head too large")
            return
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ")
        except ValueError:
            await _plain(writer, 400, "malformed request line")
            return
        headers: list[tuple[bytes, bytes]] = []
        length = 0
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                await _plain(writer, 400, "malformed header")
                return
            name, value = name.strip().lower(), value.strip()
            headers.append((name.encode("latin-1"), value.encode("latin-1")))
            if name == "content-length":
                length = int(value) if value.isdigit() else -1
        if length < 0 or length > MAX_BODY:
            await _plain(writer, 413, "request body too large")
            return
        async with asyncio.timeout(READ_TIMEOUT):
            body = await reader.readexactly(length) if length else b""
        path, _, query = target.partition("?")
        peer = writer.get_extra_info("peername")
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": version.removeprefix("HTTP/"),
            "method": method.upper(),
            "scheme": "http",
            "path": unquote(path),
            "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "root_path": "",
            "headers": headers,
            "client": (peer[0], peer[1]) if isinstance(peer, tuple) else None,
            "server": writer.get_extra_info("sockname"),
        }
        await self._run_app(scope, body, reader, writer)

    async def _run_app(
        self,
        scope: Scope,
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        body_sent = False
        started = False
        disconnected = asyncio.Event()

        async def watch_disconnect() -> None:
            # The client sends nothing more on this connection: EOF means it left.
            await reader.read(1)
            disconnected.set()

        async def receive() -> Message:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal started
            if disconnected.is_set():
                raise ConnectionResetError("the client went away")
            if message["type"] == "http.response.start":
                status = int(message["status"])
                head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
                for name, value in message.get("headers", []):
                    head.append(f"{name.decode('latin-1')}: {value.decode('latin-1')}")
                head.append("Connection: close")
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
                started = True
            elif message["type"] == "http.response.body":
                writer.write(message.get("body", b""))
                await writer.drain()

        watcher = asyncio.create_task(watch_disconnect())
        try:
            await self.app(scope, receive, send)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            logger.exception("dashboard: error answering %s %s", scope["method"], scope["path"])
            if not started:
                await _plain(writer, 500, "internal error (see the dashboard's log)")
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await writer.drain()


async def _plain(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    body = (text + "\n").encode()
    writer.write(
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()


async def serve(app: ASGIApp, host: str = "127.0.0.1", port: int = 8484) -> DashboardServer:
    """Start serving ``app`` on ``host``:``port`` (0: a free port); returns the server."""
    server = DashboardServer(app)
    await server.start(host, port)
    return server
