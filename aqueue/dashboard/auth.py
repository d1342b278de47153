"""Who may see the dashboard: an auth hook of your own, or HTTP basic auth built in.

An auth hook is any callable that takes the :class:`~aqueue.dashboard.Request`
and returns (or awaits to) True to let it through: check a session cookie
of your web app, a header set by your proxy, the client address. It sees
every request, pages, event streams, assets and actions alike. A hook that
raises refuses the request (and the error is logged): a broken check must
never open the door.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..core.errors import ConfigError

if TYPE_CHECKING:
    from .request import Request

__all__ = ["AUTH_ENV", "AuthHook", "BasicAuth", "allowed", "parse_credentials"]

logger = logging.getLogger(__name__)

#: Environment variable holding ``user:password`` for ``aqueue dashboard``.
AUTH_ENV = "AQUEUE_DASHBOARD_AUTH"

AuthHook = Callable[["Request"], "bool | Awaitable[bool]"]


def parse_credentials(text: str) -> tuple[str, str]:
    """``user:password`` as a pair; raises ConfigError when either part is missing."""
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ConfigError(
            "basic auth needs USER:PASSWORD, both non-empty (e.g. --basic-auth ops:s3cret "
            f"or {AUTH_ENV}=ops:s3cret)"
        )
    return user, password


class BasicAuth:
    """An auth hook checking HTTP basic credentials (compare in constant time)."""

    def __init__(self, user: str, password: str) -> None:
        self._expected = f"{user}:{password}".encode()

    def __repr__(self) -> str:
        return "<BasicAuth ***>"

    def __call__(self, request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, self._expected)


async def allowed(hook: AuthHook, request: Request) -> bool:
    """Whether ``hook`` lets ``request`` through; a hook that raises refuses it."""
    try:
        verdict = hook(request)
        if inspect.isawaitable(verdict):
            verdict = await verdict
    except Exception:
        logger.exception("dashboard: the auth hook raised; refusing %s", request.path)
        return False
    return verdict is True
