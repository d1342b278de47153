"""One HTTP request and response as the dashboard handles them, over plain ASGI."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from .server import Message, Receive, Scope, Send

__all__ = ["Request", "Response", "read_body", "send_response", "wait_disconnect"]


@dataclass(frozen=True)
class Request:
    """One HTTP request as the dashboard sees it."""

    method: str
    path: str
    """Below the mount point, starting with ``/``."""
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-case names; a repeated header keeps its last value."""
    client: tuple[str, int] | None
    root: str
    cookies: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_scope(cls, scope: Scope) -> Request:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        root = scope.get("root_path", "") or ""
        path = scope["path"]
        if root and path.startswith(root):  # servers differ on whether path includes it
            path = path[len(root) :]
        cookies = {}
        for part in headers.get("cookie", "").split(";"):
            name, sep, value = part.strip().partition("=")
            if sep:
                cookies[name] = value
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        client = scope.get("client")
        return cls(
            method=scope["method"],
            path=path or "/",
            query=query,
            headers=headers,
            client=(client[0], client[1]) if client else None,
            root=root,
            cookies=cookies,
        )


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("moreread_body"):
            break
    return b"".join(chunks)


async def wait_disconnect(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


async def send_response(send: Send, response: Response, head: bool = False) -> None:
    """Send a whole response (``head``: its headers only, for a HEAD request)."""
    headers = [(b"content-type", response.content_type.encode())]
    headers.append((b"content-length", str(len(response.body)).encode()))
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else response.body})
